"""``cbs spec SPEC`` (= ``cbs run SPEC``), ``cbs apply SPEC`` and ``cbs diff SPEC``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbs.kernel import SpecServer, UsageError

if TYPE_CHECKING:
    from cbs.kernel import Body

log = logging.getLogger("cbs.spec")


def configure_spec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the body spec, e.g. body.yaml")


def configure_apply(parser: argparse.ArgumentParser) -> None:
    configure_spec(parser)
    parser.add_argument(
        "--all", action="store_true", help="every body running a spec ($CBS.SPEC.ALL)"
    )
    parser.add_argument(
        "--body", metavar="ID", help="the body to reach (default: the spec's body.id)"
    )
    parser.add_argument(
        "--expect", type=int, default=0, metavar="N", help="wait until N bodies answered"
    )
    parser.add_argument(
        "--wait", type=float, default=10.0, metavar="SECONDS", help="longest wait for answers"
    )
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")


class FileSpecServer(SpecServer):
    """``cbs run SPEC``: serve a spec file and reconcile every change of it."""

    provided_by = "cbs-spec"

    async def serve(self, body: Body, path: str) -> int:
        return await _serve(body, path)


async def run_spec(body: Body, args: argparse.Namespace) -> int:
    return await _serve(body, args.spec)


async def _serve(body: Body, path: str) -> int:
    from cbs.spec.runner import SpecRunner

    runner = SpecRunner(body, path)

    def ready() -> None:
        bus = body.bus
        assert bus is not None
        ids = ", ".join(c.id for c in body.served_cells) or "none"
        log.info(
            "serving spec %s (body %s): cells %s on the %s transport; watching for changes",
            path,
            runner.spec.body_id,
            ids,
            bus.name,
        )

    # The handlers first: a SIGTERM while the spec's cells start drains them.
    await runner.run_until_signal(on_ready=ready, starting=runner.start())
    return 0


def _read(path: str) -> tuple[str, Any]:
    from cbs.spec.model import read

    spec = read(path)  # checked here first: one line if bad
    return Path(path).read_text("utf-8"), spec


def _print_change(change: dict[str, str]) -> None:
    from cbs.spec.reconcile import Change

    print("  " + Change(**change).line())


async def _send(body: Body, args: argparse.Namespace, op: str) -> list[dict[str, Any]] | None:
    from cbs.spec.control import ALL, send

    text, spec = _read(args.spec)
    if not body.transport_shared():
        return None
    await body.start(serve=False)
    bus = body.bus
    assert bus is not None
    if not bus.shared:
        return None
    who = ALL if args.all else args.body or spec.body_id
    replies = await send(bus, op, text, args.spec, body_id=who, expect=args.expect, wait=args.wait)
    if not replies:
        raise UsageError(
            f"no body answered on $CBS.SPEC.{who}.{op} within {args.wait:g} s"
            " (is a body running this spec with cbs-spec?)"
        )
    return sorted(replies, key=lambda r: (r.get("pid") or 0, r.get("instance") or ""))


async def apply(body: Body, args: argparse.Namespace) -> int:
    replies = await _send(body, args, "apply")
    if replies is None:
        raise UsageError("cbs apply needs a shared bus, e.g. --nats-url URL")
    if args.json:
        print(json.dumps(replies, indent=2))
    failed = [r for r in replies if r.get("error") or r.get("rolled_back")]
    for reply in replies if not args.json else []:
        head = f"{reply.get('body')} {reply.get('instance')} pid={reply.get('pid')}"
        if reply.get("error"):
            print(f"{head}: REFUSED, nothing changed")
            continue
        applied = reply.get("applied") or []
        print(f"{head}: {len(applied)} change(s)" if applied else f"{head}: no change")
        for change in applied + (reply.get("restart") or []):
            _print_change(change)
        for line in reply.get("rolled_back") or []:
            print(f"  ROLLED BACK {line}")
    if failed:
        first = failed[0]
        why = first.get("error") or "rolled back: " + first["rolled_back"][0]
        print(f"cbs: error: {why}", file=sys.stderr)
        return 1
    if args.expect and len(replies) < args.expect:
        print(f"cbs: error: {len(replies)} of {args.expect} bodies answered", file=sys.stderr)
        return 1
    return 0


async def diff(body: Body, args: argparse.Namespace) -> int:
    replies = await _send(body, args, "diff")
    if replies is None:  # no running body to compare with: what `cbs run` would do
        from cbs.spec.loader import SpecError
        from cbs.spec.reconcile import Reconciler

        _, spec = _read(args.spec)
        values = {k: v for k, v in body.config.items() if v is not None}
        body.configure({**values, **spec.settings})  # as `cbs run SPEC` would start
        try:
            changes = [c.to_dict() for c in Reconciler(body).plan(spec)]
        except SpecError as exc:
            raise SpecError(f"{args.spec}: {exc}") from None
        replies = [{"body": spec.body_id, "instance": "(not running)", "changes": changes}]
    if args.json:
        print(json.dumps(replies, indent=2))
        return 1 if any(r.get("error") for r in replies) else 0
    for reply in replies:
        head = f"{reply.get('body')} {reply.get('instance')}"
        if reply.get("error"):
            print(f"cbs: error: {reply['error']}", file=sys.stderr)
            return 1
        changes = reply.get("changes") or []
        print(f"{head}: {len(changes)} change(s)" if changes else f"{head}: no change")
        for change in changes:
            _print_change(change)
    return 0
