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

from nats.aio.client import Client

__all__ = ["TolerantClient"]

log = logging.getLogger("cbs.nats")

#: What nats-py raises on bytes it cannot parse (UnicodeDecodeError is a
#: ValueError; IndexError a LookupError).
_MALFORMED = (LookupError, ValueError)

#: Finds what ``str.isspace`` calls whitespace (Python's ``\s`` on str).
_WHITESPACE = re.compile(r"\s").search


class TolerantClient(Client):
    """A nats-py client that drops messages it cannot parse, and counts them."""

    malformed_messages: int = 0

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """nats-py's parser of ``Name: Value`` lines, giving the same dict for
        every input (tests/test_nats_malformed.py checks that on arbitrary
        bytes) at about half its cost: the whitespace check on a name is one
        regular-expression search instead of a generator over its characters.
        Every request that carries a ``cbs-deadline`` or ``traceparent``
        header goes through here."""
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _WHITESPACE(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

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
