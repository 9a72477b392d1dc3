"""The nats client's fast header paths write and read exactly what nats-py
does: the same bytes for every header dict a publisher passes, the same
dict (or None) for every header block a server delivers, the same exception
where nats-py raises one. nats-py's own methods are the reference, so a
release that changes them fails here; and a release whose code differs from
what the paths were checked against turns them off."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats_kit import server_has_it

from cbs.nats import _header_fix
from cbs.nats._direct import DirectDelivery
from cbs.nats._header_fix import (
    DIRECT_DELIVERY,
    FAST_HEADERS,
    ORDERED_PING,
    FastHeaders,
    TolerantClient,
)
from cbs.nats._ordered_ping import OrderedPing

_TEXT = st.text(alphabet=st.sampled_from([*"ab-Z9_: \t\r\n\x00é\u2028", "\ud800"]), max_size=6)
_NAMES = st.one_of(st.sampled_from(["cbs-deadline", "traceparent", "Nats-Msg-Id", ""]), _TEXT)
_VALUES = st.one_of(st.sampled_from(["1764590000.123", " padded ", "a\r\nInjected: 1"]), _TEXT)


async def _written(client: Client, subject: str, reply: str, headers: Any) -> Any:
    """What ``_send_publish`` leaves for the socket, or the exception's type."""
    try:
        await client._send_publish(subject, reply, b"{}", 2, headers)
    except Exception as exc:  # the type is what is compared
        return type(exc)
    return (list(client._pending), dict(client.stats))


@settings(max_examples=300, deadline=None)
@given(
    headers=st.one_of(st.none(), st.dictionaries(_NAMES, _VALUES, max_size=4)),
    subject=st.sampled_from(["bench.echo", ""]),
    reply=st.sampled_from(["_INBOX.a.1", ""]),
)
def test_a_publish_writes_what_nats_py_writes(
    headers: dict[str, str] | None, subject: str, reply: str
) -> None:
    async def both() -> tuple[Any, Any]:
        # Not connected: the command stays in _pending, where it can be read.
        return (
            await _written(FastHeaders(), subject, reply, headers),
            await _written(Client(), subject, reply, headers),
        )

    ours, theirs = asyncio.run(both())
    assert ours == theirs


_BLOCK_PIECES = st.sampled_from(
    [b"NATS/1.0", b"NATS/1.0\r\n", b"\r\n", b" 503", b" 100 Idle Heartbeat", b"cbs-deadline: 1.5"]
)
_MORE_PIECES = st.sampled_from([b"A: b", b"a b: c", b":", b"\xff", b" ", b"NATS/1.1\r\n", b""])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(_BLOCK_PIECES, _MORE_PIECES, st.binary(max_size=6)), max_size=8).map(
        b"".join
    )
)
def test_a_header_block_reads_as_nats_py_reads_it(raw: bytes) -> None:
    async def read(client: Client) -> Any:
        try:
            return await client._process_headers(raw)
        except Exception as exc:
            return type(exc)

    async def both() -> tuple[Any, Any]:
        return await read(FastHeaders()), await read(Client())

    ours, theirs = asyncio.run(both())
    assert ours == theirs


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(_BLOCK_PIECES, _MORE_PIECES, st.binary(max_size=6)), max_size=8).map(
            b"".join
        ),
        min_size=1,
        max_size=4,
    )
)
def test_the_read_without_a_coroutine_gives_nats_py_dict_block_after_block(
    blocks: list[bytes],
) -> None:
    # What direct delivery reads (the last block kept, a copy handed out)
    # against nats-py's _process_headers, for each block twice in a row,
    # whatever the reader of the first copy did to it.
    async def theirs(raw: bytes) -> Any:
        try:
            return await Client()._process_headers(raw)
        except Exception as exc:
            return type(exc)

    async def ours(client: FastHeaders, raw: bytes) -> Any:
        plain = client._plain_headers(raw)
        if plain is not ...:
            return plain
        try:
            return await client._process_headers(raw)
        except Exception as exc:
            return type(exc)

    async def check() -> None:
        client = FastHeaders()
        for raw in [block for block in blocks for _ in (1, 2)]:
            if not raw:
                continue  # direct delivery reads no headers then
            got = await ours(client, raw)
            assert got == await theirs(raw)
            if isinstance(got, dict):
                got["changed"] = "by the reader"

    asyncio.run(check())


def test_the_fast_paths_are_on_only_for_the_nats_py_code_they_were_checked_against() -> None:
    # A method whose code differs from the one checked against turns its fix off...
    changed = {name: value ^ 1 for name, value in _header_fix.CHECKED_AGAINST.items()}
    assert not _header_fix._matches(changed)
    assert not _header_fix._matches(
        {"_send_ping": _header_fix.PING_CHECKED_AGAINST["_send_ping"] ^ 1}
    )
    assert not _header_fix._matches(
        {"_process_msg": _header_fix.DIRECT_CHECKED_AGAINST["_process_msg"] ^ 1}
    )
    # ...and the client is made of the fixes that are on.
    assert issubclass(TolerantClient, FastHeaders) is FAST_HEADERS
    assert issubclass(TolerantClient, OrderedPing) is ORDERED_PING
    assert issubclass(TolerantClient, DirectDelivery) is DIRECT_DELIVERY
    assert FAST_HEADERS is _header_fix._matches(_header_fix.CHECKED_AGAINST)


async def test_headers_cross_a_real_server_both_ways(nats_server: Any) -> None:
    # A fast-path client and a plain nats-py client publish the same headers
    # to each other; each receives what the other sent.
    fast = TolerantClient()
    await fast.connect(nats_server.url)
    plain = await nats.connect(nats_server.url)
    headers = {"cbs-deadline": "1764590000.123", "traceparent": " 00-ab-cd-01 "}
    expected = {"cbs-deadline": "1764590000.123", "traceparent": "00-ab-cd-01"}
    try:
        got: dict[str, Any] = {}
        for name, receiver, sender in (("fast", fast, plain), ("plain", plain, fast)):
            sub = await receiver.subscribe(f"h.{name}")
            await server_has_it(receiver)
            await sender.publish(f"h.{name}", b"x", headers=dict(headers))
            msg = await sub.next_msg(timeout=5)
            got[name] = msg.headers
        assert got == {"fast": expected, "plain": expected}
    finally:
        await fast.close()
        await plain.close()


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "tab\tinside"])
async def test_a_value_nats_py_rewrites_is_rewritten_the_same(nats_server: Any, value: str) -> None:
    fast = TolerantClient()
    await fast.connect(nats_server.url)
    try:
        sub = await fast.subscribe("h.rewrite")
        await fast.flush()
        await fast.publish("h.rewrite", b"x", headers={"x-value": value})
        msg = await sub.next_msg(timeout=5)
        assert msg.headers == {"x-value": value.replace("\r", " ").replace("\n", " ").strip()}
        assert "Injected" not in (msg.headers or {})
    finally:
        await fast.close()
