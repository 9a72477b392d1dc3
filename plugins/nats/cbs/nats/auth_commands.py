"""``cbs auth add-cell|add-caller|ls``: identities of a secure deployment
made by ``cbs server --secure DIR`` (see cbs.nats.secure, docs/security.md).

A new identity needs no server restart: its JWT is signed by the account's
key, which the server already trusts.
"""

from __future__ import annotations

import argparse
import os

from cbs.kernel import Body, UsageError

__all__ = ["configure_auth", "run_auth"]

OPS = {
    "add-cell": "NAME [--service S ...] [--allow SERVICE.VERB ...]: a cell identity",
    "add-caller": "NAME --allow SERVICE.VERB [...]: a caller identity",
    "ls": "list the identities",
}


def configure_auth(parser: argparse.ArgumentParser) -> None:
    parser.description = "; ".join(f"{op} {text}" for op, text in OPS.items())
    parser.add_argument("auth_op", metavar="add-cell|add-caller|ls", choices=tuple(OPS))
    parser.add_argument("auth_name", nargs="?", metavar="NAME", help="the identity's name")
    parser.add_argument(
        "--dir",
        dest="auth_dir",
        default=os.environ.get("CBS_SECURE_DIR"),
        help="the folder of cbs server --secure [env CBS_SECURE_DIR]",
    )
    parser.add_argument(
        "--service",
        dest="auth_services",
        action="append",
        default=[],
        help="add-cell: a service the cell serves (default: NAME); repeatable",
    )
    parser.add_argument(
        "--allow",
        dest="auth_allow",
        action="append",
        default=[],
        metavar="SERVICE[.VERB]",
        help="a service or verb the identity may call; repeatable",
    )


def run_auth(body: Body, args: argparse.Namespace) -> int:
    from cbs.nats.secure import SecureSetup

    if not args.auth_dir:
        raise UsageError("cbs auth needs --dir DIR (the folder of cbs server --secure)")
    setup = SecureSetup(args.auth_dir)
    if not setup.exists:
        raise UsageError(f"{args.auth_dir} has no secure setup: run cbs server --secure DIR first")
    if args.auth_op == "ls":
        print(f"{'NAME':<16} {'KIND':<7} {'ACCOUNT':<8} SERVES / MAY CALL")
        for row in setup.identities():
            serves = ",".join(row.get("services", [])) or "-"
            allow = ",".join(row.get("allow", [])) or "-"
            print(f"{row['name']:<16} {row['kind']:<7} {row['account']:<8} {serves} / {allow}")
        return 0
    if not args.auth_name:
        raise UsageError(f"cbs auth {args.auth_op} needs NAME")
    try:
        if args.auth_op == "add-cell":
            path = setup.add_cell(args.auth_name, args.auth_services, args.auth_allow)
        else:
            if not args.auth_allow:
                raise UsageError("cbs auth add-caller needs --allow SERVICE.VERB (one or more)")
            path = setup.add_caller(args.auth_name, args.auth_allow)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path} (0600): use --nats-creds {path} or NATS_CREDS={path}")
    return 0
