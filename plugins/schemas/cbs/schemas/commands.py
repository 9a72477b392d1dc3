"""``cbs schema check|get|history`` and ``cbs asyncapi``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cbs.kernel import Body, UsageError, parse_target
from cbs.schemas.compat import MODES, check, major_of
from cbs.schemas.documents import SchemaError, document


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def configure_schema(parser: argparse.ArgumentParser) -> None:
    # One parser for every action, so that the body's options (--nats-url)
    # go anywhere on the line.
    parser.add_argument(
        "action",
        choices=("check", "get", "history"),
        help="check: name the breaking changes from OLD schema(s) to NEW, exit 1 on a break"
        " without a major version bump; get: print a verb's request schema from the"
        " registry; history: list its versions",
    )
    parser.add_argument(
        "args",
        nargs="+",
        metavar="ARG",
        help="check: JSON Schema files, oldest first, the new one last (the new one alone"
        " with --against-registry); get, history: SERVICE.VERB",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="BACKWARD", type=str.upper, help="check: the mode"
    )
    parser.add_argument(
        "--against-registry",
        metavar="SERVICE.VERB",
        help="check: compare the new schema with the versions of this verb in the registry",
    )
    parser.add_argument(
        "--version", type=int, metavar="N", help="get: that version (default: latest)"
    )
    parser.add_argument("--entry", action="store_true", help="get: the whole registry entry")
    parser.add_argument("--json", action="store_true", help="check, history: print JSON")


def _load(path: str) -> dict[str, Any]:
    try:
        return document(path)
    except SchemaError as exc:
        raise UsageError(str(exc)) from None


async def _registry(body: Body, command: str) -> Any:
    from cbs.nats import NatsConnection
    from cbs.schemas.registry import Registry

    if not body.transport_shared():
        raise UsageError(
            f"cbs {command} needs a shared NATS server: give --nats-url URL (or set NATS_URL)"
        )
    await body.start(serve=False)
    conn = body.capabilities.require(NatsConnection, needed_by=f"cbs {command}")
    return Registry(conn.jetstream(timeout=5.0))


async def run_schema(body: Body, args: argparse.Namespace) -> int:
    if args.action == "check":
        return await _check(body, args)
    if len(args.args) != 1:
        raise UsageError(f"cbs schema {args.action} takes one SERVICE.VERB")
    service, verb = parse_target(args.args[0])
    registry = await _registry(body, f"schema {args.action}")
    if args.action == "history":
        versions = await registry.history(service, verb)
        if args.json:
            _print_json(versions)
        for e in [] if args.json else versions:
            print(f"{e['version']:>3}  {e['label']:<24} {e['hash'][:19]}  {e.get('cell', '')}")
        if not versions:
            print(f"no schema of {service}.{verb} in the registry", file=sys.stderr)
            return 1
        return 0
    entry = await registry.get(service, verb, args.version)
    if entry is None:
        which = "" if args.version is None else f" version {args.version}"
        print(f"cbs: error: no schema of {service}.{verb}{which} in the registry", file=sys.stderr)
        return 1
    _print_json(entry if args.entry else entry["schema"])
    return 0


async def _check(body: Body, args: argparse.Namespace) -> int:
    args.schemas_ = args.args
    labels: list[str]
    if args.against_registry:
        if len(args.schemas_) != 1:
            raise UsageError("with --against-registry give only the NEW schema")
        service, verb = parse_target(args.against_registry)
        registry = await _registry(body, "schema check")
        versions = await registry.history(service, verb)
        history = [e["schema"] for e in versions]
        labels = [e["label"] for e in versions]
    else:
        if len(args.schemas_) < 2:
            raise UsageError("give OLD and NEW schemas (or NEW with --against-registry)")
        history = [_load(p) for p in args.schemas_[:-1]]
        labels = [str(s.get("$id") or p) for s, p in zip(history, args.schemas_, strict=False)]
    new_path = args.schemas_[-1]
    new = _load(new_path)
    changes = check(args.mode, history, new)
    old_major = major_of(labels[-1]) if labels else None
    new_major = major_of(str(new.get("$id") or new_path))
    bumped = old_major is not None and new_major is not None and new_major > old_major
    if args.json:
        _print_json(
            {
                "mode": args.mode,
                "compatible": not changes,
                "major_bump": bumped,
                "changes": [
                    {"direction": c.direction, "path": c.path, "kind": c.kind, "text": c.text}
                    for c in changes
                ],
            }
        )
    else:
        for change in changes:
            print(change.line())
    if not changes:
        if not args.json:
            print(f"compatible ({args.mode})")
        return 0
    if bumped:
        print(
            f"{len(changes)} breaking change(s), allowed by the major version bump"
            f" v{old_major} -> v{new_major}",
            file=sys.stderr,
        )
        return 0
    print(
        f"cbs: error: {len(changes)} breaking change(s) in {args.mode} mode"
        " without a major version bump",
        file=sys.stderr,
    )
    return 1
