"""No message silences a body: malformed headers, subjects and statuses sent
from a bare socket to discovery (``$SRV.PING``, which every body hears), to a
cell's subject and to a caller's reply inbox. After each, every body still
reads (a message published right after the bad one reaches all of them) and
every body's request succeeds, with no reconnect: the message was dropped.
A real nats-server throughout; the raw client speaks the protocol itself."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jetstream_kit import eventually
from nats.aio.client import Client
from nats_kit import server_has_it

from cbs.breaker import plugin as breaker_plugin
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics.plugin import server_url
from cbs.nats import plugin as nats_plugin
from cbs.nats._header_fix import TolerantClient
from cbs.nats._watchdog import ReadLoopWatchdog, is_receiving
from cbs.nats.transport import NatsBus

MakeBody = Callable[..., Body]
CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
ENVELOPE = json.dumps(
    {
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "service": "greeter",
        "verb": "say_hello",
        "schema": "demo/v1/Name",
        "payload": {"name": "Ada"},
    }
).encode()
NAME = "demo/v1/Name"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def hpub(subject: bytes, reply: bytes, header: bytes, payload: bytes) -> bytes:
    total = len(header) + len(payload)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject, reply, len(header), total, header, payload)


def pub(subject: bytes, reply: bytes, payload: bytes) -> bytes:
    return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(payload), payload)


# Header blocks, each sent as an HPUB to the target's subject.
HEADERS: dict[str, bytes] = {
    "no CRLF": b"NATS/1.0",
    "shorter than the version": b"NATS",
    "bare LF": b"NATS/1.0\nfoo: bar\n\n",
    "bare CR": b"NATS/1.0\rfoo: bar\r\r",
    "only CRLFs": b"\r\n\r\n",
    "NUL bytes": b"NATS/1.0\r\n\x00\x00: \x00\r\n\r\n",
    "invalid UTF-8 status": b"NATS/1.0 \xff\xfe\xfd\r\n\r\n",
    "invalid UTF-8 description": b"NATS/1.0 503 \xff\xfe\r\n\r\n",
    "invalid UTF-8 description, then headers": b"NATS/1.0 100 Idle\xff\r\nA: b\r\n\r\n",
    "invalid UTF-8 name": b"NATS/1.0\r\n\xff\xfe: v\r\n\r\n",
    "invalid UTF-8 value": b"NATS/1.0\r\nk: \xff\xfe\r\n\r\n",
    "no colon": b"NATS/1.0\r\nnocolon\r\n\r\n",
    "space in the name": b"NATS/1.0\r\nbad name: v\r\n\r\n",
    "short status": b"NATS/1.0 5\r\n\r\n",
    "status only": b"NATS/1.0 ",
    "empty status": b"NATS/1.0 \r\n\r\n",
    "status with no CRLF": b"NATS/1.0 503",
    "long status": b"NATS/1.0 50312345678901234567890\r\n\r\n",
    "fake 503": b"NATS/1.0 503\r\n\r\n",
    "fake 408": b"NATS/1.0 408 Request Timeout\r\n\r\n",
    "fake 404": b"NATS/1.0 404 No Messages\r\n\r\n",
    "fake 100 heartbeat": b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\n\r\n",
    "fake 100 flow control": b"NATS/1.0 100 FlowControl Request\r\n\r\n",
    "other version": b"NATS/2.0\r\nk: v\r\n\r\n",
    "two traceparent": (
        b"NATS/1.0\r\ntraceparent: %s\r\ntraceparent: zz\r\n\r\n" % TRACEPARENT.encode()
    ),
    "two Cbs-Deadline": b"NATS/1.0\r\nCbs-Deadline: 1\r\ncbs-deadline: soon\r\n\r\n",
    "bad Cbs-Deadline": b"NATS/1.0\r\nCbs-Deadline: -1e999\r\n\r\n",
    "20,000 headers": b"NATS/1.0\r\n%s\r\n" % b"".join(b"h%d: v\r\n" % i for i in range(20_000)),
    "one 100 kB value": b"NATS/1.0\r\nbig: " + b"x" * 100_000 + b"\r\n\r\n",
}
# What nats-py 2.16 raises on in its read loop (see cbs.nats._header_fix).
RAISES = {
    "no CRLF",
    "shorter than the version",
    "only CRLFs",
    "invalid UTF-8 status",
    "invalid UTF-8 description",
    "invalid UTF-8 description, then headers",
    "invalid UTF-8 reply subject",
    "invalid UTF-8 subject",
}


class RawClient:
    """A NATS client on a bare socket: sends any bytes; records MSG/HMSG."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("nats://").split(":")
        self.host, self.port = host, int(port)
        self.messages: list[tuple[str, str]] = []  # (subject, reply)
        self.pongs = 0
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        await self.reader.readline()  # INFO
        self.writer.write(CONNECT)
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                op = line.split()
                if op[0] == b"PING":
                    self.writer.write(b"PONG\r\n")
                elif op[0] == b"PONG":
                    self.pongs += 1
                elif op[0] in (b"MSG", b"HMSG"):
                    await self.reader.readexactly(int(op[-1]) + 2)
                    reply = op[3].decode() if len(op) == (6 if op[0] == b"HMSG" else 5) else ""
                    self.messages.append((op[1].decode(), reply))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self.closed = True

    async def send(self, data: bytes) -> bool:
        """Send, then PING; whether the server answered PONG (false: it hung up)."""
        pongs = self.pongs
        self.writer.write(data + b"PING\r\n")
        await eventually(lambda: self.pongs > pongs or self.closed, 5, "PONG or close")
        return not self.closed

    async def close(self) -> None:
        self.writer.close()
        if self._task is not None:
            await self._task


class Target:
    """Where the bad messages go: a subject, and one with an invalid token."""

    def __init__(self, subject: str, payload: bytes, odd_subject: bytes | None) -> None:
        self.subject = subject.encode()
        self.payload = payload
        self.odd_subject = odd_subject

    def frames(self) -> dict[str, bytes]:
        frames = {
            name: hpub(self.subject, b"_INBOX.raw.junk", header, self.payload)
            for name, header in HEADERS.items()
        }
        frames["invalid UTF-8 reply subject"] = pub(self.subject, b"_INBOX.\xff\xfe", self.payload)
        frames["header size over total"] = b"HPUB %s 10 5\r\nNATS/\r\n" % self.subject
        if self.odd_subject is not None:
            frames["invalid UTF-8 subject"] = pub(self.odd_subject, b"", self.payload)
        return frames


def nats_bus(body: Body) -> NatsBus:
    assert isinstance(body.bus, NatsBus)
    return body.bus


class Member:
    """A started body, and what reached ``sync.all`` on its connection."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.bus = nats_bus(body)
        self.seen: list[bytes] = []

    async def listen(self) -> None:
        async def record(msg: Any) -> None:
            self.seen.append(msg.data)

        await self.bus.client.subscribe("sync.all", cb=record)
        await self.bus.client.flush()


async def bodies(make_body: MakeBody, url: str) -> dict[str, Member]:
    """Two bodies serving greeter (and discovery), one that only calls."""
    config = {"nats_url": url}
    plugins = {
        "server a": (nats_plugin, breaker_plugin, greeter_plugin),
        "server b": (nats_plugin, breaker_plugin, greeter_plugin),
        "caller": (nats_plugin, breaker_plugin),
    }
    found = {}
    for name, chosen in plugins.items():
        body = make_body(*chosen, config=config)
        await body.start()
        found[name] = member = Member(body)
        await member.listen()
    return found


async def everyone_still_works(
    found: dict[str, Member], raw: RawClient, url: str, marker: bytes, what: str
) -> None:
    # Published after the bad message on the same connection, so it reaches
    # each body after it: seen means that body read past the bad one.
    if not await raw.send(pub(b"sync.all", b"", marker)):
        other = await RawClient(url).open()
        await other.send(pub(b"sync.all", b"", marker))
        await other.close()
    for name, member in found.items():
        seen = member.seen
        await eventually(lambda: marker in seen, 2, f"{name} reading after {what}")  # noqa: B023
        reply = await member.body.request(
            "greeter", "say_hello", {"name": "Ada"}, schema=NAME, timeout=2
        )
        assert reply == {"message": "Hello Ada!"}, (name, what)


def assert_nothing_reconnected(found: dict[str, Member]) -> None:
    for name, member in found.items():
        bus = member.bus
        assert bus.receiving, name
        assert bus.client.stats["reconnects"] == 0, name
        assert bus._watchdog is not None and bus._watchdog.restarts == 0, name


def dropped(found: dict[str, Member]) -> dict[str, int]:
    return {name: member.bus.malformed_messages for name, member in found.items()}


async def send_all(
    found: dict[str, Member], url: str, target: Target
) -> tuple[RawClient, dict[str, dict[str, int]]]:
    """Each frame on a fresh connection, then the checks; also which bodies
    dropped each frame (form -> body -> count)."""
    watcher = await RawClient(url).open()  # sees discovery replies to _INBOX.raw.*
    await watcher.send(b"SUB _INBOX.raw.> 1\r\n")
    drops = {}
    for i, (name, frame) in enumerate(target.frames().items()):
        before = dropped(found)
        raw = await RawClient(url).open()
        await raw.send(frame)
        await everyone_still_works(found, raw, url, b"%d" % i, name)
        await raw.close()
        after = dropped(found)
        if delta := {b: after[b] - before[b] for b in after if after[b] != before[b]}:
            drops[name] = delta
    return watcher, drops


async def test_bad_messages_to_discovery_reach_and_spare_every_body(
    nats_server: Any, make_body: MakeBody
) -> None:
    found = await bodies(make_body, nats_server.url)
    target = Target("$SRV.PING", b"", b"$SRV.PING.\xff\xfe")
    watcher, drops = await send_all(found, nats_server.url, target)
    assert_nothing_reconnected(found)
    # Both servers hear $SRV.PING: each dropped each form nats-py cannot parse.
    assert drops == {form: {"server a": 1, "server b": 1} for form in RAISES}
    # The rest were parsed and answered (the replies went to _INBOX.raw.junk).
    answered = len(target.frames()) - len(RAISES) - 1  # the one the server refused
    cells = sum(len(member.body.served_cells) for member in found.values())  # 3 per server
    await eventually(lambda: len(watcher.messages) == cells * answered, 5, "discovery replies")
    # And discovery still answers for every cell of both bodies.
    await watcher.send(pub(b"$SRV.PING", b"_INBOX.raw.ping", b""))

    def pings() -> int:
        return sum(subject == "_INBOX.raw.ping" for subject, _ in watcher.messages)

    await eventually(lambda: pings() == cells, 2, f"{cells} ping replies, not {pings()}")
    await watcher.close()


async def test_bad_messages_to_a_cell_subject_spare_its_servers(
    nats_server: Any, make_body: MakeBody
) -> None:
    found = await bodies(make_body, nats_server.url)
    target = Target("cbs.greeter.say_hello", ENVELOPE, None)
    watcher, drops = await send_all(found, nats_server.url, target)
    await watcher.close()
    assert_nothing_reconnected(found)
    # The queue group gives each bad message to one of the two servers.
    assert set(drops) == RAISES - {"invalid UTF-8 subject"}
    assert all(list(d.values()) == [1] and "caller" not in d for d in drops.values())


async def test_bad_messages_to_a_callers_inbox_spare_the_caller(
    nats_server: Any, make_body: MakeBody
) -> None:
    found = await bodies(make_body, nats_server.url)
    # Learn the caller's reply inbox from a request it sends, as any
    # subscriber of the cell's subject could.
    spy = await RawClient(nats_server.url).open()
    await spy.send(b"SUB cbs.greeter.say_hello 1\r\n")
    await found["caller"].body.request("greeter", "say_hello", {"name": "Ada"}, schema=NAME)
    await eventually(lambda: bool(spy.messages), 2, "the caller's request")
    await spy.close()
    inbox = spy.messages[0][1].rsplit(".", 1)[0]
    assert inbox.startswith("_INBOX.")
    target = Target(inbox + ".junk", b"{}", inbox.encode() + b".\xff\xfe")
    watcher, drops = await send_all(found, nats_server.url, target)
    await watcher.close()
    assert_nothing_reconnected(found)
    assert drops == {form: {"caller": 1} for form in RAISES}


async def test_the_watchdog_reconnects_a_client_whose_read_loop_died(nats_server: Any) -> None:
    # A plain nats-py client: its read loop dies on the 8-byte header block.
    nc = await nats.connect(nats_server.url, reconnect_time_wait=0.1)
    other = await nats.connect(nats_server.url)
    watchdog = ReadLoopWatchdog(nc, interval=0.1)
    try:

        async def echo(msg: Any) -> None:
            await msg.respond(b"pong")

        await nc.subscribe("probe.echo", cb=echo)
        await server_has_it(nc)
        watchdog.start()
        raw = await RawClient(nats_server.url).open()
        await raw.send(hpub(b"probe.echo", b"_INBOX.raw.x", b"NATS/1.0", b""))
        await raw.close()
        await eventually(lambda: watchdog.restarts == 1, 2, "nats-py still dies on 'NATS/1.0'")
        await eventually(lambda: is_receiving(nc), 2, "reconnected")
        await server_has_it(nc)  # the SUB it sent again on the fresh connection
        # The subscription came back with the fresh connection.
        assert (await other.request("probe.echo", b"", timeout=2)).data == b"pong"
        assert nc.stats["reconnects"] == 1
    finally:
        await watchdog.stop()
        await nc.close()
        await other.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


async def status_becomes(url: str, status: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (got := await asyncio.to_thread(http_status, url)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} answered {got}, not {status}, for {seconds:g} s")
        await asyncio.sleep(0.05)


async def test_readyz_is_503_while_the_read_loop_is_dead(
    nats_server: Any, make_body: MakeBody
) -> None:
    config = {"nats_url": nats_server.url, "metrics_port": 0}
    body = make_body(nats_plugin, greeter_plugin, metrics_plugin, config=config)
    await body.start()
    base = server_url(body)
    assert base is not None
    readyz = base + "readyz"
    bus = nats_bus(body)
    await status_becomes(readyz, 200, 5)

    # A malformed message is dropped: still ready.
    raw = await RawClient(nats_server.url).open()
    assert await raw.send(hpub(b"$SRV.PING", b"_INBOX.raw.x", b"NATS/1.0", b""))
    await raw.close()
    await eventually(lambda: bus.malformed_messages == 1, 2, "dropped")
    await status_becomes(readyz, 200, 2)

    # Any other death of the read loop, with the watchdog held off: not ready.
    watchdog = bus._watchdog
    assert watchdog is not None
    await watchdog.stop()
    reading = bus.client._reading_task
    assert reading is not None
    reading.cancel()
    await eventually(lambda: not bus.receiving, 2, "not receiving")
    assert bus.connected  # what /readyz used to look at
    await status_becomes(readyz, 503, 2)

    # The watchdog reconnects: ready again, and serving.
    watchdog.start()
    await status_becomes(readyz, 200, 3)
    assert watchdog.restarts == 1
    assert await body.request("greeter", "say_hello", {"name": "Ada"}, schema=NAME, timeout=2) == {
        "message": "Hello Ada!"
    }


async def test_a_flood_is_counted_and_logged_sparingly(
    nats_server: Any, make_body: MakeBody, caplog: pytest.LogCaptureFixture
) -> None:
    body = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
    await body.start()
    bus = nats_bus(body)
    raw = await RawClient(nats_server.url).open()
    assert await raw.send(hpub(b"$SRV.PING", b"", b"NATS/1.0", b"") * 1000)
    await raw.close()
    await eventually(lambda: bus.malformed_messages == 1000, 5, "1000 dropped")
    warnings = [r for r in caplog.records if "dropped a malformed message" in r.message]
    assert len(warnings) == 10  # the 1st, 2nd, 4th, ... 512th
    assert await body.request("greeter", "say_hello", {"name": "Ada"}, timeout=2)
    assert bus.receiving


async def test_the_watchdog_leaves_ordinary_reconnects_alone(
    nats_server: Any, make_body: MakeBody
) -> None:
    body = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
    await body.start()
    bus = nats_bus(body)
    nats_server.kill()
    await eventually(lambda: not bus.receiving, 5, "not receiving without a server")
    nats_server.start()
    await eventually(lambda: bus.receiving, 15, "receiving after the server came back")
    assert await body.request("greeter", "say_hello", {"name": "Ada"}, timeout=5)
    assert bus._watchdog is not None and bus._watchdog.restarts == 0
    assert bus.client.stats["reconnects"] == 1


_HEADER_PIECES = st.sampled_from(
    [
        b"\r\n",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\x1c",
        b"\x0b",
        b"cbs-deadline",
        b"traceparent",
        b"1764590000.123",
        b"\xff",
        b"\xc3\xa9",
        b"A",
        b"a b",
        b"\r",
        b"\n",
        b"",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_HEADER_PIECES, st.binary(max_size=8)), max_size=12).map(b"".join))
def test_the_header_line_parser_gives_what_nats_py_gives(raw: bytes) -> None:
    # TolerantClient parses header lines faster; nats-py's own parser is the
    # reference, so a nats-py release that changes it fails this test.
    assert TolerantClient._parse_header_lines(raw) == Client._parse_header_lines(raw)
