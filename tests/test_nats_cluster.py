"""CBS on NATS clusters and superclusters: real nats-server processes on
127.0.0.1 joined by routes (and gateways), killed with SIGKILL by pid.

* ``cbs server --cluster N`` / ``--supercluster``: seed URLs, clean stop, no orphans;
* bodies say which server and cluster they are on; discovery lists each instance's cluster;
* node loss: the serving body's node killed, requests go on, only those in flight fail;
* leader loss: 2000 durable sends while the stream leader is killed, 0 acked lost;
* gateways: a caller in A reaches a cell only in B; with the cell in both, A serves A;
* scale-out: 1 and 2 bodies serving one cell across the cluster.

Figures are printed (``pytest -s``) and recorded in docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from cbs_process import CLI, alive, wait_gone
from jetstream_kit import FAST, SCHEMA, Sink, eventually

from cbs.contracts import CbsError, Timeout
from cbs.contracts.envelope import new_id
from cbs.jetstream import plugin as jetstream_plugin
from cbs.kernel import Body, Cell, Directory
from cbs.nats import NatsConnection
from cbs.nats import plugin as nats_plugin
from cbs.nats.cluster import NatsCluster, NatsSupercluster, read_info
from cbs.testing import CellsPlugin

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
ENV["CBS_PLUGINS"] = "nats"
ANY = "test/v1/Any"


def echo_cell(tag: str) -> tuple[Cell, collections.Counter[str]]:
    """A cell ``echo`` answering with ``tag``; the counter counts its requests."""
    served: collections.Counter[str] = collections.Counter()
    cell = Cell("echo", category="logic", version="1.0.0", purpose="says who answered")

    @cell.verb("who", schema=ANY)
    async def who(payload: dict[str, Any]) -> dict[str, Any]:
        served[tag] += 1
        return {"by": tag}

    return cell, served


async def serving(make_body: Any, url: str, tag: str) -> tuple[Body, collections.Counter[str]]:
    cell, served = echo_cell(tag)
    body: Body = make_body(nats_plugin, CellsPlugin(cell), config={"nats_url": url})
    await body.start()
    return body, served


async def caller(make_body: Any, url: str) -> Body:
    body: Body = make_body(nats_plugin, config={"nats_url": url})
    await body.start(serve=False)
    return body


def connection(body: Body) -> NatsConnection:
    return body.capabilities.require(NatsConnection, needed_by="tests")


# -- cbs server --cluster / --supercluster -------------------------------------------------


def _run_server(*args: str, sig: signal.Signals, lines: int) -> tuple[list[str], str, list[int]]:
    proc = subprocess.Popen(
        [*CLI, "server", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        out = [proc.stdout.readline().rstrip("\n") for _ in range(lines)]
        children = [int(p) for p in _children(proc.pid)]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    return out, err, children


def _children(pid: int) -> list[str]:
    """The child processes of ``pid``, of all its threads."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += f.read().split()
    return found


def test_cbs_server_cluster_prints_the_seed_urls_and_stops_on_sigint_without_orphans() -> None:
    out, err, children = _run_server("--cluster", "3", sig=signal.SIGINT, lines=2)
    assert out[0].startswith("nats cluster cbs ready: 3 node(s), JetStream on (pids ")
    pids = [int(p) for p in out[0].split("(pids ")[1].rstrip(")").split(", ")]
    assert sorted(pids) == sorted(children)  # the only processes it started
    urls = out[1].removeprefix("export NATS_URL=").split(",")
    assert len(urls) == 3 and all(u.startswith("nats://127.0.0.1:") for u in urls)
    assert all(wait_gone(pid, 5) for pid in pids)
    assert "Traceback" not in err


def test_cbs_server_supercluster_stops_on_sigterm_without_orphans(tmp_path: Any) -> None:
    out, _, children = _run_server(
        "--supercluster", "--cluster", "1", "--store", str(tmp_path), sig=signal.SIGTERM, lines=4
    )
    assert out[0].startswith("nats cluster A ready: 1 node(s)")
    assert out[1].startswith("nats cluster B ready: 1 node(s)")
    assert out[2].startswith("A: export NATS_URL=nats://127.0.0.1:")
    assert out[3].startswith("B: export NATS_URL=nats://127.0.0.1:")
    assert len(children) == 2 and all(wait_gone(pid, 5) for pid in children)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A-1", "B-1"]  # the stores stay


def test_cbs_server_cluster_refuses_a_port_with_one_line() -> None:
    done = subprocess.run(
        [*CLI, "server", "--cluster", "3", "--port", "4333"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "--port applies to a single server" in done.stderr


# -- where a body is -------------------------------------------------------------------------


async def test_a_body_seeded_with_one_node_learns_the_cluster_and_says_where_it_is(
    nats_cluster: NatsCluster, make_body: Any
) -> None:
    body, _ = await serving(make_body, nats_cluster.urls[0], "a")
    conn = connection(body)
    info = await conn.server()
    assert info.cluster == "cbs" and info.cluster_size == 3
    assert info.name == nats_cluster.nodes[0].server_name
    assert conn.connected_url == nats_cluster.urls[0]
    assert set(nats_cluster.urls) <= set(conn.servers)  # the other nodes were announced
    assert await conn.stream_replicas() == 3

    other = await caller(make_body, nats_cluster.urls[2])
    cells = await other.capabilities.require(Directory, needed_by="tests").list_cells()
    (echo,) = [c for c in cells if c["id"] == "echo"]
    assert echo["clusters"] == "cbs"
    (where,) = echo["per_instance"].values()
    assert where["server"] == info.name and where["cluster"] == "cbs"


async def test_a_single_server_is_no_cluster(nats_server: Any, make_body: Any) -> None:
    body = await caller(make_body, nats_server.url)
    info = await connection(body).server()
    assert info.cluster == "" and info.cluster_size == 1 and info.name
    assert await connection(body).stream_replicas() == 1


# -- node loss --------------------------------------------------------------------------------


async def test_node_loss_only_requests_in_flight_at_the_loss_fail(
    nats_cluster: NatsCluster, make_body: Any
) -> None:
    urls = nats_cluster.urls
    lost_body, lost_served = await serving(make_body, urls[0], "lost")
    _, kept_served = await serving(make_body, urls[2], "kept")
    client = await caller(make_body, urls[1])
    victim = nats_cluster.node_at(connection(lost_body).connected_url)
    assert victim is nats_cluster.nodes[0]

    results: list[tuple[float, float, str]] = []  # sent, answered, outcome

    async def one() -> None:
        sent = time.monotonic()
        try:
            reply = await client.request("echo", "who", {}, schema=ANY, timeout=1.0)
            outcome = reply["by"]
        except CbsError as exc:
            outcome = type(exc).__name__
        results.append((sent, time.monotonic(), outcome))

    tasks: list[asyncio.Task[None]] = []
    killed_at = 0.0

    async def steady(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(0.005)  # about 200 requests a second

    await steady(0.7)
    before_kill = lost_served["lost"]
    assert before_kill > 0 and kept_served["kept"] > 0
    # The client's server forwards to the killed node until it has seen the
    # route close (its INFO then stops announcing the node): a request sent
    # in between is lost with the node, as any message in flight to it is.
    client_node = nats_cluster.node_at(connection(client).connected_url)
    victim_url = f"127.0.0.1:{victim.port}"

    def announced() -> bool:
        info = read_info("127.0.0.1", client_node.port, 0.5)
        return victim_url in (info.get("connect_urls") or [])

    assert announced()
    victim.kill()  # SIGKILL, returns once the process is gone
    killed_at = time.monotonic()
    steady_after = asyncio.ensure_future(steady(2.3))
    while await asyncio.to_thread(announced):
        assert time.monotonic() - killed_at < 2.0, "the client's server still routes to the node"
    noticed_at = time.monotonic()
    await eventually(lambda: lost_served["lost"] > before_kill, seconds=2.0, what="back")
    back_after = time.monotonic() - killed_at
    await steady_after
    await asyncio.gather(*tasks)

    failed = [r for r in results if r[2] not in ("lost", "kept")]
    in_flight = [r for r in results if r[0] < killed_at and r[1] > killed_at]
    after = [r for r in results if r[0] >= killed_at]
    first_ok = min(r[1] for r in after if r[2] in ("lost", "kept")) - killed_at
    print(
        f"\nnode loss: {len(results)} requests, {len(in_flight)} in flight at the kill,"
        f" {len(failed)} failed ({collections.Counter(r[2] for r in failed)}),"
        f" first reply after the kill in {first_ok * 1000:.0f} ms, the body on the lost node"
        f" served again after {back_after:.2f} s (via {connection(lost_body).connected_url}),"
        f" the client's server noticed within {(noticed_at - killed_at) * 1000:.0f} ms"
    )
    assert all(r[0] < noticed_at for r in failed), "a request sent after the loss was seen failed"
    assert all(r[2] == Timeout.__name__ for r in failed)
    assert first_ok < 2.0 and back_after < 2.0
    assert connection(lost_body).connected_url != victim.url


# -- leader loss --------------------------------------------------------------------------------


async def test_leader_loss_during_2000_durable_sends_loses_no_acked_send(
    nats_cluster: NatsCluster, make_body: Any
) -> None:
    sink = Sink()
    urls = nats_cluster.seed_url
    # A delivery whose ack went to the killed leader comes again after
    # ack_wait (30 s by default): shorter here, so the wait below covers it.
    config = {"nats_url": urls, **FAST, "jetstream_ack_wait": 3.0}
    consumer = make_body(nats_plugin, jetstream_plugin, sink, config=config)
    await consumer.start()
    sender = make_body(
        nats_plugin, jetstream_plugin, config={"nats_url": urls, "jetstream_publish_timeout": 5.0}
    )
    await sender.start(serve=False)
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        info = await nc.jetstream().stream_info("CBS_sink")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3 and info.cluster is not None
    leader = nats_cluster.node_named(info.cluster.leader or "")

    sends, window = 2000, asyncio.Semaphore(64)
    ids = [new_id() for _ in range(sends)]
    acked: list[str] = []
    failed: list[int] = []

    async def send(i: int) -> None:
        async with window:
            try:
                await sender.send("sink", "record", {"n": i}, schema=SCHEMA, id=ids[i])
            except CbsError:
                failed.append(i)  # not acknowledged: sent again below with the same id
                return
            acked.append(ids[i])

    async def chaos() -> int:
        await eventually(lambda: len(acked) >= sends // 4, seconds=20, what="a quarter acked")
        leader.kill()
        return len(acked)

    started = time.monotonic()
    at_kill, *_ = await asyncio.gather(chaos(), *(send(i) for i in range(sends)))
    for i in failed:
        await sender.send("sink", "record", {"n": i}, schema=SCHEMA, id=ids[i])
        acked.append(ids[i])
    await eventually(lambda: set(acked) <= set(sink.seen), seconds=20, what="all acked handled")
    took = time.monotonic() - started
    twice = [i for i, n in sink.seen.items() if n > 1]
    print(
        f"\nleader loss: {len(acked)} acked ({len(failed)} resent), {at_kill} acked at the kill"
        f" of {leader.server_name}; {len(set(acked) - set(sink.seen))} lost,"
        f" {sum(sink.seen.values())} handler runs, {len(twice)} ids run twice, {took:.1f} s"
    )
    assert at_kill < sends
    assert set(acked) - set(sink.seen) == set()
    assert set(sink.seen) == set(ids)
    assert twice == []  # duplicates (resends, redeliveries) absorbed by the dedup


# -- gateways -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def supercluster() -> Iterator[NatsSupercluster]:
    clusters = NatsSupercluster(1).start()
    try:
        yield clusters
    finally:
        clusters.stop()


async def test_a_caller_in_one_cluster_reaches_a_cell_only_in_the_other(
    supercluster: NatsSupercluster, make_body: Any
) -> None:
    await serving(make_body, supercluster["B"].seed_url, "B")
    client = await caller(make_body, supercluster["A"].seed_url)
    assert (await connection(client).server()).cluster == "A"
    started = time.monotonic()
    for _ in range(50):
        assert (await client.request("echo", "who", {}, schema=ANY, timeout=2.0))["by"] == "B"
    per_request = (time.monotonic() - started) / 50
    cells = await client.capabilities.require(Directory, needed_by="tests").list_cells()
    (echo,) = [c for c in cells if c["id"] == "echo"]
    assert echo["clusters"] == "B"
    print(f"\ngateway: A -> B request/reply {per_request * 1000:.2f} ms each")


async def test_with_the_cell_in_both_clusters_requests_stay_in_the_callers(
    supercluster: NatsSupercluster, make_body: Any
) -> None:
    await serving(make_body, supercluster["A"].seed_url, "A")
    await serving(make_body, supercluster["B"].seed_url, "B")
    client = await caller(make_body, supercluster["A"].seed_url)
    replies = collections.Counter(
        [
            (await client.request("echo", "who", {}, schema=ANY, timeout=2.0))["by"]
            for _ in range(500)
        ]
    )
    share = replies["A"] / 500
    cells = await client.capabilities.require(Directory, needed_by="tests").list_cells()
    (echo,) = [c for c in cells if c["id"] == "echo"]
    print(f"\ngateway locality: {share:.1%} of 500 requests from A served in A ({replies})")
    assert echo["clusters"] == "A,B" and echo["instances"] == 2
    assert share == 1.0


# -- scale-out ----------------------------------------------------------------------------


@pytest.mark.parametrize("bodies", [1, 2])
async def test_scale_out_bodies_on_different_nodes_share_the_load(
    nats_cluster: NatsCluster, make_body: Any, bodies: int
) -> None:
    counters = [
        (await serving(make_body, nats_cluster.urls[i + 1], f"b{i}"))[1] for i in range(bodies)
    ]
    client = await caller(make_body, nats_cluster.urls[0])
    total, window = 2000, asyncio.Semaphore(100)

    async def one() -> None:
        async with window:
            await client.request("echo", "who", {}, schema=ANY, timeout=5.0)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(total)))
    rate = total / (time.monotonic() - started)
    shares = [sum(c.values()) / total for c in counters]
    print(f"\nscale-out: {bodies} body(ies), {rate:.0f} requests/s, shares {shares}")
    assert sum(sum(c.values()) for c in counters) == total
    assert all(share > 0.3 for share in shares)


def test_the_fixture_cluster_is_stopped_by_pid() -> None:
    cluster = NatsCluster(3).start()
    pids = cluster.pids
    assert len(pids) == 3 and all(alive(p) for p in pids)
    cluster.stop()
    assert not any(alive(p) for p in pids)
