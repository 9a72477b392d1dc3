"""``cbs chaos set|clear|list`` (over the control subjects) and
``cbs chaos run EXPERIMENT`` (see :mod:`cbs.chaos.experiment`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from cbs.kernel import UsageError

if TYPE_CHECKING:
    from cbs.kernel import Body


OPS = {
    "set": "add fault rules to running bodies (a rule of the same name is replaced)",
    "clear": "remove fault rules from running bodies (every rule without names)",
    "list": "list the bodies that answer and the rules in force in each",
    "run": "run an experiment file and write a JSON and a Markdown report",
}


def configure(parser: argparse.ArgumentParser) -> None:
    # One parser (no nested subcommands), so that plugin options such as
    # --nats-url work after the operation too.
    parser.description = "; ".join(f"{op}: {text}" for op, text in OPS.items())
    parser.add_argument("chaos_op", metavar="set|clear|list|run", choices=tuple(OPS))
    parser.add_argument(
        "chaos_args",
        nargs="*",
        metavar="ARG",
        help="set: a rules file or rules as YAML/JSON text; clear: rule names; run: an"
        " experiment file",
    )
    parser.add_argument("--replace", action="store_true", help="set: replace every rule in force")
    parser.add_argument("--instance", metavar="ID", help="only the body with this chaos id")
    parser.add_argument(
        "--expect",
        type=int,
        default=0,
        metavar="N",
        help="wait until N bodies answered (default: until answers stop)",
    )
    parser.add_argument(
        "--wait", type=float, default=2.0, metavar="SECONDS", help="longest wait for answers"
    )
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")
    parser.add_argument(
        "--report",
        default="chaos-report",
        metavar="PATH",
        help="run: write PATH.json and PATH.md (default: chaos-report)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="run: bound of the whole run (default: the experiment's, else 120)",
    )


def _summary(reply: dict[str, Any]) -> str:
    cells = ",".join(reply.get("cells") or []) or "-"
    rules = reply.get("rules") or []
    names = ", ".join(
        f"{r.get('name')}({r.get('side')} {r.get('fault')} {r.get('subject')})" for r in rules
    )
    line = f"{reply.get('instance')}  pid={reply.get('pid')}  cells={cells}  rules: {names or '-'}"
    if reply.get("error"):
        line += f"  REFUSED: {reply['error']}"
    return line


async def _control(body: Body, args: argparse.Namespace) -> int:
    from cbs.chaos.control import ALL, PREFIX, send
    from cbs.chaos.plugin import LISTEN
    from cbs.chaos.rules import read_rules

    message: dict[str, Any] = {"op": args.chaos_op}
    if args.chaos_op == "set":
        if len(args.chaos_args) != 1:
            raise UsageError("cbs chaos set takes one rules file or YAML/JSON text")
        rules = read_rules(args.chaos_args[0])  # checked here first: one line if bad
        message["rules"] = [r.to_dict() for r in rules]
        message["replace"] = args.replace
    elif args.chaos_op == "clear":
        message["names"] = args.chaos_args
    elif args.chaos_args:
        raise UsageError("cbs chaos list takes no arguments")
    body.stash[LISTEN] = False
    await body.start(serve=False)
    bus = body.bus
    assert bus is not None
    if not bus.shared:
        raise UsageError(f"cbs chaos {args.chaos_op} needs a shared bus, e.g. --nats-url URL")
    replies = await send(bus, message, instance=args.instance, expect=args.expect, wait=args.wait)
    subject = PREFIX + args.instance if args.instance else ALL
    if not replies:
        print(
            f"cbs: error: no body answered on {subject} within {args.wait:g} s"
            " (is cbs-chaos installed where the cells run?)",
            file=sys.stderr,
        )
        return 1
    replies.sort(key=lambda r: (r.get("pid") or 0, r.get("instance")))
    if args.json:
        print(json.dumps(replies, indent=2))
    else:
        for reply in replies:
            print(_summary(reply))
    refused = [r for r in replies if r.get("error")]
    if refused:
        print(f"cbs: error: {refused[0]['error']}", file=sys.stderr)
        return 1
    if args.expect and len(replies) < args.expect:
        print(
            f"cbs: error: {len(replies)} of {args.expect} bodies answered on {subject}",
            file=sys.stderr,
        )
        return 1
    return 0


async def run(body: Body, args: argparse.Namespace) -> int:
    if args.chaos_op == "run":
        from cbs.chaos.runner import run_file

        if len(args.chaos_args) != 1:
            raise UsageError("cbs chaos run takes one experiment file")
        return await run_file(body, args.chaos_args[0], report=args.report, timeout=args.timeout)
    return await _control(body, args)
