"""A conformance suite that any CBS transport runs.

Give it one fixture, ``cbs_transport``, returning a :class:`TransportUnderTest`
(the plugins that provide the transport and the config that selects it), and
collect :class:`TransportConformance` in a test module::

    import pytest
    from cbs.testing.conformance import TransportConformance, TransportUnderTest

    import my_transport_plugin


    @pytest.fixture(params=["mine"])
    def cbs_transport(request):
        return TransportUnderTest([my_transport_plugin], {"transport": "mine"})


    class TestMyTransport(TransportConformance):
        pass

Every test takes ``cbs_transport`` before ``make_body``, so that a server the
transport fixture starts outlives the bodies. Every test builds real bodies
through the ``make_body`` fixture of the kit
and speaks only through the ``cbs.contracts.Bus`` protocol and ``Body``, so
what passes here works under every plugin CBS has. Needs pytest-asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from cbs.contracts import Bus, CbsError, Cell, NoResponders, Timeout, Unavailable, codec
from cbs.kernel import Body, Served, TransportState, current_request
from cbs.kernel import Cell as KernelCell
from cbs.kernel.transport import endpoint_handler
from cbs.testing import CellsPlugin

__all__ = ["TransportUnderTest", "TransportConformance"]


@attrs.frozen
class TransportUnderTest:
    """The plugins that provide a transport and the config that selects it."""

    plugins: Sequence[Any] = ()
    config: Mapping[str, Any] = attrs.field(factory=dict)


def _probe_cell(tag: str = "a", *, max_concurrency: int = 100) -> Cell:
    cell = KernelCell(
        "conformance_probe",
        service="conformance",
        category="logic",
        version="1.0.0",
        purpose="answers the conformance suite",
        max_concurrency=max_concurrency,
    )

    @cell.verb("echo", schema="conformance/v1/Any")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        headers = dict(current_request().headers)
        return {"echo": payload, "tag": tag, "header": headers.get("x-conformance")}

    @cell.verb("sleep", schema="conformance/v1/Any")
    async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(payload.get("seconds", 0.05)))
        return {"slept": True, "tag": tag}

    return cell


async def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class TransportConformance:
    """What every transport must do. Subclass it in a ``Test*`` class and
    provide the ``cbs_transport`` fixture."""

    async def _body(
        self, make_body: Callable[..., Body], transport: TransportUnderTest, *cells: Cell
    ) -> Body:
        plugins = [*transport.plugins, *([CellsPlugin(*cells)] if cells else [])]
        body = make_body(*plugins, config=dict(transport.config))
        await body.start()
        return body

    async def test_a_request_gets_its_reply_with_headers(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport, _probe_cell())
        reply = await body.request(
            "conformance", "echo", {"n": 1, "text": "ü"}, headers={"x-conformance": "yes"}
        )
        assert reply == {"echo": {"n": 1, "text": "ü"}, "tag": "a", "header": "yes"}

    async def test_nobody_serving_is_no_responders(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport)
        try:
            await body.request("conformance", "nobody", {}, timeout=2.0)
        except NoResponders:
            return
        raise AssertionError("expected NoResponders")

    async def test_a_slow_handler_is_a_timeout(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport, _probe_cell())
        try:
            await body.request("conformance", "sleep", {"seconds": 1.0}, timeout=0.1)
        except Timeout:
            return
        raise AssertionError("expected Timeout")

    async def test_a_queue_group_shares_the_requests(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport, _probe_cell("a"))
        other = _probe_cell("b")
        bus = body.bus
        assert bus is not None
        served = Served(other, other.endpoints[0])
        member = await bus.serve(
            served.subject, served.queue_group, endpoint_handler(served, []), max_concurrency=10
        )
        tags = [(await body.request("conformance", "echo", {}))["tag"] for _ in range(40)]
        await member.stop()
        assert set(tags) == {"a", "b"}, tags
        # After stop(), the member gets nothing more.
        after = {(await body.request("conformance", "echo", {}))["tag"] for _ in range(10)}
        assert after == {"a"}

    async def test_max_concurrency_bounds_running_handlers(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        running = peak = 0
        cell = KernelCell(
            "conformance_bounded",
            service="conformance",
            category="logic",
            version="1.0.0",
            purpose="bounded",
            max_concurrency=3,
        )

        @cell.verb("work", schema="conformance/v1/Any")
        async def work(payload: dict[str, Any]) -> dict[str, Any]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            return {}

        body = await self._body(make_body, cbs_transport, cell)
        await asyncio.gather(*(body.request("conformance", "work", {}) for _ in range(12)))
        assert peak == 3

    async def test_past_max_pending_a_request_is_refused_with_retry_after(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        started = asyncio.Event()
        cell = KernelCell(
            "conformance_queued",
            service="conformance",
            category="logic",
            version="1.0.0",
            purpose="one at a time, one waiting",
            max_concurrency=1,
            max_pending=1,
        )

        @cell.verb("work", schema="conformance/v1/Any")
        async def work(payload: dict[str, Any]) -> dict[str, Any]:
            started.set()
            await asyncio.sleep(float(payload["seconds"]))
            return {"n": payload["n"]}

        async def call(n: int, seconds: float) -> dict[str, Any] | CbsError:
            try:
                return await body.request("conformance", "work", {"n": n, "seconds": seconds})
            except CbsError as exc:
                return exc

        body = await self._body(make_body, cbs_transport, cell)
        first = asyncio.ensure_future(call(1, 1.0))
        await asyncio.wait_for(started.wait(), 5)
        # While 1 runs, one of 2 and 3 waits; the other is refused at once.
        rest = await asyncio.gather(call(2, 0), call(3, 0))
        refused = [r for r in rest if isinstance(r, Unavailable)]
        assert len(refused) == 1, rest
        assert refused[0].details is not None and refused[0].details["retry_after"] > 0
        assert await first == {"n": 1}
        state = body.capabilities.require(TransportState, needed_by="the conformance suite")
        assert state.refused_requests == 1

    async def test_stopping_a_subscription_lets_in_flight_requests_finish(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport, _probe_cell())
        pending = [
            asyncio.ensure_future(body.request("conformance", "sleep", {"seconds": 0.2}))
            for _ in range(5)
        ]
        await asyncio.sleep(0.05)  # they are in flight now
        await body.remove_cell("conformance_probe")  # drains, then unsubscribes
        assert [r["slept"] for r in await asyncio.gather(*pending)] == [True] * 5

    async def test_publish_reaches_a_member_without_a_reply(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        seen: list[dict[str, Any]] = []
        cell = KernelCell(
            "conformance_sink",
            service="conformance",
            category="io",
            version="1.0.0",
            purpose="sink",
        )

        @cell.verb("sink", schema="conformance/v1/Any")
        async def sink(payload: dict[str, Any]) -> dict[str, Any]:
            seen.append(payload)
            return {}

        body = await self._body(make_body, cbs_transport, cell)
        await body.publish("conformance", "sink", {"n": 7})
        await _wait_for(lambda: seen == [{"n": 7}])

    async def test_undecodable_bytes_get_a_bad_request_reply(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport, _probe_cell())
        bus: Bus | None = body.bus
        assert bus is not None
        data = await bus.request("cbs.conformance.echo", b"\xff not json", timeout=2.0)
        error = codec.decode(data).error
        assert error is not None and error["code"] == "BadRequest"
        # and the cell keeps serving
        assert (await body.request("conformance", "echo", {}))["tag"] == "a"

    async def test_the_transport_offers_its_state(
        self, cbs_transport: TransportUnderTest, make_body: Callable[..., Body]
    ) -> None:
        body = await self._body(make_body, cbs_transport)
        state = body.capabilities.require(TransportState, needed_by="the conformance suite")
        assert state.receiving is True
        assert state.wrong_replies == 0
        await body.stop()
        assert TransportState not in body.capabilities
