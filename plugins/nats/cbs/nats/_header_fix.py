"""A malformed inbound message is dropped and counted, never fatal.

nats-py 2.16 turns a message's header block into a dict, and decodes its
subject and reply subject, inside the connection's read loop
(``Client._process_msg`` -> ``_process_headers`` / ``_build_message``). Bytes
any publisher chooses make that raise:

* a header block of 8 bytes or fewer (``NATS/1.0`` with no CRLF, ``NATS``):
  ``IndexError`` on ``raw_headers[0]``;
* an inline status or description that is not UTF-8 (``NATS/1.0 \\xff\\xfe``,
  ``NATS/1.0 503 \\xff``, ``NATS/1.0 100 Idle\\xff\\r\\nA: b``):
  ``UnicodeDecodeError``;
* a subject or reply subject that is not UTF-8 (the server passes the bytes
  through): ``UnicodeDecodeError`` in ``_build_message``.

The read loop's catch-all ``except Exception`` logs and stops reading for
good while the client still reports connected (upstream: nats-io/nats.py
PR #914, open at nats-py 2.16). As every body subscribes to ``$SRV.PING``, one
publish silenced every body on the bus until ping-stale detection, minutes
later.

:class:`TolerantClient` contains that at the one place the message is
handled: such a message is dropped, counted in ``malformed_messages`` and
logged (the 1st, 2nd, 4th, 8th, ... time), and the loop reads on. Other
failures still end the loop; ``cbs.nats._watchdog`` reconnects then.

Drop this module (and make a plain ``nats.aio.client.Client`` in
``NatsBus.start`` again) once nats-py's header parsing and subject decoding are
total: ``tests/test_nats_malformed.py`` says whether a release still needs it
(its exact drop counts fall to zero, and its watchdog test, on a plain
nats-py client, no longer sees the read loop die).
"""

from __future__ import annotations

import logging
import re
import zlib
from types import EllipsisType
from typing import Any

from cbs.nats._direct import DirectDelivery
from cbs.nats._ordered_ping import OrderedPing
from nats.aio import client as _nats_client
from nats.aio.client import Client
from nats.protocol.command import pub_cmd as _pub_cmd

__all__ = ["TolerantClient", "FastHeaders", "DIRECT_DELIVERY", "FAST_HEADERS", "ORDERED_PING"]

log = logging.getLogger("cbs.nats")

#: What nats-py raises on bytes it cannot parse (UnicodeDecodeError is a
#: ValueError; IndexError a LookupError).
_MALFORMED = (LookupError, ValueError)

#: Finds what ``str.isspace`` calls whitespace (Python's ``\s`` on str).
_WHITESPACE = re.compile(r"\s").search

#: A header block with no inline status starts so (nats-py's ``NATS/1.0``
#: and CRLF): ``_process_headers`` parses what follows as ``Name: Value`` lines.
_PLAIN_BLOCK = b"NATS/1.0\r\n"
#: Header names checked once against nats-py's own rule (a bounded cache:
#: CBS sends a handful of names, a hostile caller cannot grow it).
_CHECKED_NAMES: dict[str, bool] = {}
_MAX_CHECKED_NAMES = 256
#: nats-py parses header lines with fast-mail-parser when that is installed
#: (decided when it is imported): then its own path is the only reference.
_NATS_PARSES_EMAIL = vars(_nats_client).get("parse_email") is not None


#: Header-line names as read (bytes before the colon) -> the key nats-py
#: makes of them, or None for a line it skips (bounded like _CHECKED_NAMES).
_KEYS: dict[bytes, str | None] = {}
_UNSEEN: Any = object()
#: The last common header block read, and its dict (never handed out itself).
_LAST_BLOCK: tuple[bytes, dict[str, str]] = (b"", {})


def _key_of(name: bytes) -> str | None:
    """The key nats-py's line parser makes of a name's bytes: stripped,
    ASCII, with no whitespace inside; None when it skips the line."""
    try:
        key: str | None = name.strip().decode("ascii")
    except UnicodeDecodeError:
        key = None
    if key is not None and _WHITESPACE(key):
        key = None
    if len(_KEYS) < _MAX_CHECKED_NAMES:
        _KEYS[name] = key
    return key


def _name_ok(name: str) -> bool:
    ok = _CHECKED_NAMES.get(name)
    if ok is None:
        ok = _nats_client._HEADER_KEY_RE.fullmatch(name) is not None
        if len(_CHECKED_NAMES) < _MAX_CHECKED_NAMES:
            _CHECKED_NAMES[name] = ok
    return ok


def _header_block(headers: dict[str, Any]) -> bytes | None:
    """The header block nats-py would write for ``headers``, or None when
    only nats-py's own path gives its answer (a name it strips, skips or
    refuses, a value with a line break it rewrites, anything not a str)."""
    lines = []
    for name, value in headers.items():
        if type(name) is not str or type(value) is not str or not _name_ok(name):
            return None
        if "\r" in value or "\n" in value:
            return None
        lines.append(f"{name}: {value.strip()}\r\n")
    return f"NATS/1.0\r\n{''.join(lines)}\r\n".encode()


def _fingerprint(function: Any) -> int:
    """What a change to ``function``'s code would change: the names and
    constants it uses (not its bytecode, which differs between Pythons)."""
    code = function.__code__
    consts = tuple(c for c in code.co_consts if isinstance(c, (str, bytes, int)))
    return zlib.crc32(repr((code.co_names, code.co_varnames, consts)).encode())


#: The nats-py methods the fast header paths stand in for, as they were when
#: the paths were checked against them (nats-py 2.16.0). If nats-py's code
#: differs, TolerantClient uses nats-py's own methods: slower, never wrong.
#: (The early write of ``_send_publish`` also relies on how ``_send_command``
#: queues a command and how ``_flusher`` writes the queue.)
CHECKED_AGAINST = {
    "_send_publish": 0xA8916F4B,
    "_process_headers": 0xA6023AF4,
    "_send_command": 0x46FFD56A,
    "_flusher": 0xDB67B663,
}
#: The same for :class:`~cbs.nats._ordered_ping.OrderedPing`'s ``_send_ping``.
PING_CHECKED_AGAINST = {"_send_ping": 0x5B6CD161}
#: The same for :class:`~cbs.nats._direct.DirectDelivery`, which repeats the
#: start of ``_process_msg`` and the checks of ``publish``, and keeps its map
#: in step with ``_remove_sub``.
DIRECT_CHECKED_AGAINST = {
    "_process_msg": 0x5F60043C,
    "publish": 0x96311D01,
    "_build_message": 0xDC51538A,
    "_remove_sub": 0x2D58A8B6,
}


#: Publishes made in one turn of the event loop are written in chunks of this
#: many, not only all at once when nats-py's flusher task runs after the
#: turn: the server and the peer start on the first chunk while this process
#: still makes the rest, so processes on different cores overlap instead of
#: taking turns (see docs/performance.md for what it measured).
EARLY_WRITE = 32
#: No early write while the socket's send buffer holds this much: the
#: flusher's write, which waits for the buffer to drain, stays the back pressure.
EARLY_WRITE_BUFFER = 64 * 1024


class FastHeaders(Client):
    """nats-py's header paths for the common header block, at a third of
    their cost (every request with a ``cbs-deadline`` or ``traceparent``
    header pays them on both sides). They give nats-py's bytes and dicts for
    every input (tests/test_nats_headers.py checks that on arbitrary input);
    anything unusual takes nats-py's own path."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """nats-py's parser of ``Name: Value`` lines, giving the same dict for
        every input (tests/test_nats_malformed.py checks that on arbitrary
        bytes) at about half its cost: a name's bytes are decoded and checked
        once (:func:`_key_of`), not on every line. Every request that carries
        a ``cbs-deadline`` or ``traceparent`` header goes through here."""
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = _KEYS.get(name, _UNSEEN)
            if key is _UNSEEN:
                key = _key_of(name)
            if key is not None:
                out[key] = value.strip().decode("utf-8", "replace")
        return out

    @staticmethod
    def _plain_headers(headers: bytes) -> dict[str, str] | EllipsisType | None:
        """:meth:`_process_headers`' answer without a coroutine, for the
        common block (no inline status); ``...`` for any other, which only
        nats-py's path answers. Requests sent within the same millisecond
        carry the same ``cbs-deadline`` block: the last block read is kept,
        with its dict, and a copy handed out when the next one is the same."""
        global _LAST_BLOCK
        last = _LAST_BLOCK
        if type(headers) is not bytes:
            return ...
        if headers == last[0]:
            return last[1].copy()
        if (
            len(headers) <= len(_PLAIN_BLOCK)
            or not headers.startswith(_PLAIN_BLOCK)
            or _NATS_PARSES_EMAIL
        ):
            return ...
        out = FastHeaders._parse_header_lines(headers[len(_PLAIN_BLOCK) :])
        if not out:
            return None
        _LAST_BLOCK = (headers, out.copy())
        return out

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        # nats-py builds a header block piece by piece, with a regular
        # expression per name, on every publish; here a name is checked once.
        # Every publish comes here, so the plain one is written here too (a
        # call to nats-py's method would cost a coroutine more).
        if headers is None and subject:
            command = _pub_cmd(subject, reply, payload)
        else:
            block = _header_block(headers) if headers is not None and subject else None
            if block is None:
                await super()._send_publish(subject, reply, payload, payload_size, headers)
                return
            size = len(block)
            command = b"".join(
                (
                    f"HPUB {subject} {reply} {size} {size + payload_size}\r\n".encode(),
                    block,
                    payload,
                    b"\r\n",
                )
            )
        # The rest is nats-py's _send_publish as it is after the command, with
        # the early write.
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(command)
        if len(self._pending) >= EARLY_WRITE:
            self._write_early()
        if self._pending and self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def _write_early(self) -> None:
        """Write the commands queued so far, as the flusher would, unless the
        connection is not up (while it reconnects, the queue is what is sent
        once it is) or the send buffer is full enough to need the flusher's
        wait. A flusher already woken then finds nothing to write."""
        writer = getattr(self._transport, "_io_writer", None)  # TCP and TLS only
        if (
            writer is None
            or not self.is_connected
            or writer.transport.get_write_buffer_size() > EARLY_WRITE_BUFFER
        ):
            return
        self._transport.writelines(self._pending)  # type: ignore[union-attr]
        self._pending = []
        self._pending_data_size = 0

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        # Every message comes here: none (most), or the common block (no
        # inline status) parsed without nats-py's status checks.
        if not headers:
            return None
        plain = self._plain_headers(headers)
        if plain is not ...:
            return plain
        parsed: dict[str, str] | None = await super()._process_headers(headers)
        return parsed


def _matches(checked: dict[str, int]) -> bool:
    return all(_fingerprint(vars(Client)[name]) == value for name, value in checked.items())


#: Whether nats-py's header code is what :class:`FastHeaders` was checked against.
FAST_HEADERS = _matches(CHECKED_AGAINST)
#: Whether nats-py's ``_send_ping`` is the one :class:`OrderedPing` replaces.
ORDERED_PING = _matches(PING_CHECKED_AGAINST)
#: Whether nats-py's message path is the one :class:`DirectDelivery` skips.
DIRECT_DELIVERY = _matches(DIRECT_CHECKED_AGAINST)
_BASES: tuple[type[Client], ...] = (
    *((DirectDelivery,) if DIRECT_DELIVERY else ()),
    *((OrderedPing,) if ORDERED_PING else ()),
    *((FastHeaders,) if FAST_HEADERS else ()),
) or (Client,)


class TolerantClient(*_BASES):  # type: ignore[misc]
    """A nats-py client that drops messages it cannot parse, and counts them
    (with :class:`FastHeaders`' header paths, :class:`OrderedPing`'s flush
    and :class:`DirectDelivery`'s subscriptions while nats-py's code is the
    one they were checked against)."""

    malformed_messages: int = 0

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        try:
            await super()._process_msg(sid, subject, reply, data, headers)
        except _MALFORMED as exc:
            self.malformed_messages += 1
            count = self.malformed_messages
            if count & (count - 1) == 0:  # 1, 2, 4, 8, ...: no log flood
                log.warning(
                    "nats: dropped a malformed message on %s (%s); %d so far",
                    bytes(subject[:80]).decode("utf-8", "backslashreplace"),
                    type(exc).__name__,
                    count,
                )
