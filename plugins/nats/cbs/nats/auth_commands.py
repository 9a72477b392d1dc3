"""``cbs auth add-cell|add-caller|add-account|share|ls``: identities and
accounts of a secure deployment made by ``cbs server --secure DIR`` (see
cbs.nats.secure, docs/security.md).

A new identity needs no server restart: its JWT is signed by the account's
key, which the server already trusts. A new account or a share changes the
accounts the server preloads: restart ``cbs server --secure DIR``.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from cbs.kernel import Body, UsageError

if TYPE_CHECKING:
    from cbs.nats.secure import SecureSetup

__all__ = ["configure_auth", "run_auth"]

OPS = {
    "add-cell": "NAME [--service S ...] [--allow SERVICE.VERB ...] [--account A]: a cell identity",
    "add-caller": "NAME --allow SERVICE.VERB [...] [--account A]: a caller identity",
    "add-account": "NAME: an account, isolated from the others (restart the server)",
    "share": "--from A --to B SERVICE[.VERB]: export from A, import into B (restart the server)",
    "ls": "list the identities and the accounts",
}


def configure_auth(parser: argparse.ArgumentParser) -> None:
    parser.description = "; ".join(f"{op} {text}" for op, text in OPS.items())
    parser.set_defaults(auth_name=None, auth_services=[], auth_allow=[], auth_account=None)
    ops = parser.add_subparsers(dest="auth_op", metavar="|".join(OPS), required=True)
    for op, text in OPS.items():
        sub = ops.add_parser(op, help=text, description=text)
        sub.error = parser.error  # type: ignore[method-assign]
        sub.add_argument(
            "--dir",
            dest="auth_dir",
            default=os.environ.get("CBS_SECURE_DIR"),
            help="the folder of cbs server --secure [env CBS_SECURE_DIR]",
        )
        if op == "share":
            sub.add_argument("auth_name", metavar="SERVICE[.VERB]", help="what to share")
            sub.add_argument("--from", dest="auth_from", required=True, metavar="ACCOUNT")
            sub.add_argument("--to", dest="auth_to", required=True, metavar="ACCOUNT")
        elif op != "ls":
            sub.add_argument("auth_name", metavar="NAME", help="the identity's or account's name")
        if op in ("add-cell", "add-caller"):
            sub.add_argument(
                "--allow",
                dest="auth_allow",
                action="append",
                default=[],
                metavar="SERVICE[.VERB]",
                help="a service or verb the identity may call; repeatable",
            )
            sub.add_argument(
                "--account", dest="auth_account", help="the identity's account (default: CBS)"
            )
        if op == "add-cell":
            sub.add_argument(
                "--service",
                dest="auth_services",
                action="append",
                default=[],
                help="a service the cell serves (default: NAME); repeatable",
            )


def _print_ls(setup: SecureSetup) -> None:
    print(f"{'NAME':<16} {'KIND':<7} {'ACCOUNT':<8} SERVES / MAY CALL")
    for row in setup.identities():
        serves = ",".join(row.get("services", [])) or "-"
        allow = ",".join(row.get("allow", [])) or "-"
        print(f"{row['name']:<16} {row['kind']:<7} {row['account']:<8} {serves} / {allow}")
    print()
    print(f"{'ACCOUNT':<16} {'EXPORTS':<32} IMPORTS")
    for account in setup.accounts():
        exports = ",".join(account["exports"]) or "-"
        imports = ",".join(f"{s}<{a}" for s, a in account["imports"]) or "-"
        print(f"{account['name']:<16} {exports:<32} {imports}")


def run_auth(body: Body, args: argparse.Namespace) -> int:
    from cbs.nats.secure import SecureSetup

    if not args.auth_dir:
        raise UsageError("cbs auth needs --dir DIR (the folder of cbs server --secure)")
    setup = SecureSetup(args.auth_dir)
    if not setup.exists:
        raise UsageError(f"{args.auth_dir} has no secure setup: run cbs server --secure DIR first")
    if args.auth_op == "ls":
        _print_ls(setup)
        return 0
    account = args.auth_account or "CBS"
    try:
        if args.auth_op in ("add-cell", "add-caller"):
            setup.check_account(account)
        if args.auth_op == "add-cell":
            path = setup.add_cell(
                args.auth_name, args.auth_services, args.auth_allow, account=account
            )
        elif args.auth_op == "add-caller":
            if not args.auth_allow:
                raise UsageError("cbs auth add-caller needs --allow SERVICE.VERB (one or more)")
            path = setup.add_caller(args.auth_name, args.auth_allow, account=account)
        elif args.auth_op == "add-account":
            setup.add_account(args.auth_name)
            print(f"account {args.auth_name} ready: restart cbs server --secure {setup.folder}")
            return 0
        else:
            return _share(setup, args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path} (0600): use --nats-creds {path} or NATS_CREDS={path}")
    return 0


def _share(setup: SecureSetup, args: argparse.Namespace) -> int:
    from cbs.nats.secure import parse_allow

    subject = parse_allow(args.auth_name)
    for account in (args.auth_from, args.auth_to):
        setup.check_account(account)
    if args.auth_from == args.auth_to:
        raise UsageError("cbs auth share: --from and --to are the same account")
    setup.share(subject, owner=args.auth_from, to=args.auth_to)
    print(
        f"shared {subject} from {args.auth_from} to {args.auth_to}:"
        f" restart cbs server --secure {setup.folder}"
    )
    return 0
