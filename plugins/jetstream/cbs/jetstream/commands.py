"""``cbs send``, ``cbs replay`` and ``cbs dlq``: argument parsing here, the
work in store.py (imported only when a command runs)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from cbs.jetstream.settings import parse_time
from cbs.kernel import PAYLOAD_HELP, Body, UsageError, number, parse_target, read_payload

if TYPE_CHECKING:
    from cbs.jetstream.runtime import JetStreamRuntime

__all__ = [
    "configure_send",
    "run_send",
    "configure_replay",
    "run_replay",
    "configure_dlq",
    "run_dlq",
]


async def _connect(body: Body, command: str) -> JetStreamRuntime:
    """Start ``body`` (serving nothing) on a shared NATS and return its runtime."""
    from cbs.jetstream.plugin import RUNTIME

    if not body.transport_shared():
        raise UsageError(
            f"cbs {command} needs a shared NATS server: give --nats-url URL (or set NATS_URL)"
        )
    await body.start(serve=False)
    if RUNTIME not in body.stash:  # the transport offers no NatsConnection
        raise UsageError(f"cbs {command} needs the nats transport (pip install cbs-nats)")
    return body.stash[RUNTIME]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


#: Stream sequences start at 1.
_seq = number(int, at_least=1)


def _time(text: str) -> Any:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- cbs send ---------------------------------------------------------------------------------


def configure_send(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="SERVICE.VERB", help="e.g. printer.write")
    parser.add_argument(
        "payload", nargs="?", default="{}", metavar="PAYLOAD", help=PAYLOAD_HELP + " (default: {})"
    )
    parser.add_argument("--schema", help="request schema (default: the cell's, if installed)")
    parser.add_argument(
        "--id", metavar="UUID", help="envelope id (default: a new one); resend with the same id"
    )


async def run_send(body: Body, args: argparse.Namespace) -> int:
    service, verb = parse_target(args.target)
    payload = read_payload(args.payload)
    await _connect(body, "send")
    print(await body.send(service, verb, payload, schema=args.schema, id=args.id))
    return 0


# -- cbs replay -------------------------------------------------------------------------------


def configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="whose stored requests to replay")
    parser.add_argument("--verb", help="only this verb (default: every verb of the service)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--since", type=_time, metavar="TIME", help="from this time: ISO 8601, or 10m / 2h ago"
    )
    start.add_argument("--from-seq", type=_seq, metavar="N", help="from this stream sequence")
    end = parser.add_mutually_exclusive_group()
    end.add_argument("--until", type=_time, metavar="TIME", help="up to this time (inclusive)")
    end.add_argument("--to-seq", type=_seq, metavar="N", help="up to this sequence (inclusive)")
    parser.add_argument(
        "--to",
        metavar="SUBJECT",
        help="publish the envelopes to SUBJECT instead of their durable subject",
    )
    parser.add_argument("--dry-run", action="store_true", help="only list what would be replayed")


async def run_replay(body: Body, args: argparse.Namespace) -> int:
    from cbs.jetstream.store import Range, replay

    if args.to is not None and (not args.to or any(c in args.to for c in "*> ")):
        raise UsageError(f"--to needs a subject without wildcards, not {args.to!r}")
    rt = await _connect(body, "replay")
    where = Range(from_seq=args.from_seq, since=args.since, to_seq=args.to_seq, until=args.until)
    result = await replay(rt, args.service, where, verb=args.verb, to=args.to, dry_run=args.dry_run)
    for seq, ident in result.replayed:
        print(f"{seq}\t{ident}")
    verb = "would replay" if args.dry_run else "replayed"
    span = (
        f" (sequences {result.replayed[0][0]}-{result.replayed[-1][0]})" if result.replayed else ""
    )
    dup = f", {result.duplicates} already stored" if result.duplicates else ""
    print(f"{verb} {len(result.replayed)} envelope(s){span} to {result.target}{dup}")
    return 0


# -- cbs dlq ----------------------------------------------------------------------------------

DLQ_ACTIONS = ("list", "show", "retry", "purge")


def configure_dlq(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=DLQ_ACTIONS,
        help="list: the dead letters; show SEQ: one in full; retry SEQ... | --all: deliver"
        " again; purge [SEQ...]: remove (all by default)",
    )
    parser.add_argument("service", metavar="SERVICE")
    parser.add_argument("seqs", nargs="*", type=_seq, metavar="SEQ", help="dead-letter sequences")
    parser.add_argument("--all", action="store_true", help="retry: every dead letter")
    parser.add_argument("--json", action="store_true", help="list, show: print JSON")
    parser.add_argument(
        "--yes", "-y", action="store_true", help="purge: do not ask (needed off a terminal)"
    )


def _line(entry: dict[str, Any]) -> str:
    error = entry["error"]
    what = f"{error.get('code', '?')}: {error.get('message', '')}" if error else "?"
    return (
        f"{entry['seq']:<6} {entry['time']:<24} {entry['verb']:<12} {entry['deliveries']:<3}"
        f" {entry['id']:<36} {what}"
    )


def _confirm_purge(service: str, seqs: list[int]) -> bool:
    """Ask on the terminal; off a terminal, ``--yes`` is required."""
    what = f"dead letter(s) {' '.join(map(str, seqs))}" if seqs else "every dead letter"
    if not sys.stdin.isatty():
        raise UsageError(
            f"cbs dlq purge removes {what} of {service} for good: add --yes"
            " (stdin is not a terminal)"
        )
    print(f"remove {what} of {service} for good? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


async def run_dlq(body: Body, args: argparse.Namespace) -> int:
    from cbs.jetstream import store

    action, service, seqs = args.action, args.service, args.seqs
    if action == "show" and len(seqs) != 1:
        raise UsageError("cbs dlq show SERVICE SEQ: give one sequence")
    if action == "retry" and bool(seqs) == args.all:
        raise UsageError("cbs dlq retry SERVICE: give SEQ... or --all")
    if action == "list" and seqs:
        raise UsageError("cbs dlq list SERVICE takes no sequence")
    if action == "purge" and not args.yes and not _confirm_purge(service, seqs):
        print("nothing purged", file=sys.stderr)
        return 1
    rt = await _connect(body, "dlq")
    if action == "list":
        entries = await store.dlq_list(rt, service)
        if args.json:
            _print_json(entries)
        else:
            for entry in entries:
                print(_line(entry))
            print(f"{len(entries)} dead letter(s) for {service}")
    elif action == "show":
        entry = await store.dlq_show(rt, service, seqs[0])
        if args.json:
            _print_json(entry)
        else:
            print(_line(entry))
            print("request:", json.dumps(entry["request"], ensure_ascii=False))
            print("error:  ", json.dumps(entry["error_reply"], ensure_ascii=False))
            for key, value in sorted(entry["headers"].items()):
                if key not in ("Cbs-Error",):
                    print(f"  {key}: {value}")
    elif action == "retry":
        done = await store.dlq_retry(rt, service, None if args.all else seqs)
        for seq, ident in done:
            print(f"{seq}\t{ident}")
        print(f"retried {len(done)} dead letter(s) for {service}")
    else:
        count = await store.dlq_purge(rt, service, seqs or None)
        print(f"purged {count} dead letter(s) for {service}")
    return 0
