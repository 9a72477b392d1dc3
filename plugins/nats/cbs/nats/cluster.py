"""NATS clusters and superclusters on 127.0.0.1, for development and tests
(``cbs server --cluster N``, ``cbs server --supercluster``, the ``nats_cluster``
fixture), and which server a connection is on.

A :class:`NatsCluster` is N :class:`~cbs.nats.server.NatsServer` processes
(each with its work folder, owner file, ``PR_SET_PDEATHSIG`` and stop by pid)
joined by routes on free ports, JetStream on in every node. A
:class:`NatsSupercluster` is two such clusters joined by gateways. Production
runs the same configuration on separate machines: docs/cluster.md.

:func:`server_info` reads the INFO greeting of the server a client is connected
to (its name, cluster, the client URLs of the cluster), on a fresh socket: the
greeting comes before authentication, and nats-py keeps it private.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cbs.contracts import Unavailable
from cbs.nats.server import NatsServer, free_port

__all__ = [
    "NatsCluster",
    "NatsSupercluster",
    "ServerInfo",
    "cluster_replicas",
    "read_info",
    "server_info",
]


@dataclass(frozen=True)
class ServerInfo:
    """What a NATS server says about itself in its INFO greeting."""

    #: The server's ``server_name``.
    name: str = ""
    #: Its cluster's name ("" for a server that is not in a cluster).
    cluster: str = ""
    #: The URL the client is connected to (no credentials).
    url: str = ""
    version: str = ""
    #: Client URLs of the servers of the cluster it knows (``connect_urls``).
    cluster_urls: tuple[str, ...] = field(default=())
    #: Whether JetStream is on.
    jetstream: bool = False

    @classmethod
    def from_info(cls, info: dict[str, Any], url: str) -> ServerInfo:
        urls = info.get("connect_urls") or []
        return cls(
            name=str(info.get("server_name") or info.get("server_id") or ""),
            cluster=str(info.get("cluster") or ""),
            url=url,
            version=str(info.get("version") or ""),
            cluster_urls=tuple(str(u) for u in urls if isinstance(u, str)),
            jetstream=bool(info.get("jetstream")),
        )

    @property
    def cluster_size(self) -> int:
        """How many servers the cluster has, as far as this one knows (1 alone)."""
        return max(1, len(set(self.cluster_urls))) if self.cluster else 1


def read_info(host: str, port: int, timeout: float = 1.0) -> dict[str, Any]:
    """The INFO greeting of the NATS server at ``host:port`` (blocking)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while b"\r\n" not in data and len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        raise OSError(f"no INFO from {host}:{port}")
    info = json.loads(line[5:])
    if not isinstance(info, dict):
        raise OSError(f"bad INFO from {host}:{port}")
    return info


async def server_info(url: str, timeout: float = 1.0) -> ServerInfo:
    """:class:`ServerInfo` of the server at ``url`` (``nats://host:port``);
    an empty one (but ``url``) if it cannot be read (a TLS-first server)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"
    try:
        info = await asyncio.to_thread(
            read_info, parts.hostname or "127.0.0.1", parts.port or 4222, timeout
        )
    except (OSError, ValueError):
        return ServerInfo(url=shown)
    return ServerInfo.from_info(info, shown)


def cluster_replicas(info: ServerInfo) -> int:
    """Replicas of CBS streams by default: 3 on a cluster of 3 or more
    servers, else 1 (docs/cluster.md, "Replicas and placement")."""
    return 3 if info.cluster and info.cluster_size >= 3 else 1


# -- clusters on loopback -----------------------------------------------------------------


def _in_parallel(calls: Sequence[Any]) -> None:
    """For stopping only: a child started in a thread that ends gets its
    ``PR_SET_PDEATHSIG`` then."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


class NatsCluster:
    """``size`` nats-server processes on 127.0.0.1 forming the cluster
    ``name``, JetStream on (stores under ``store/<name>-<i>`` if given, else
    temporary). ``gateway`` makes each node listen for gateways too (see
    :class:`NatsSupercluster`)."""

    def __init__(
        self,
        size: int = 3,
        store: str | os.PathLike[str] | None = None,
        *,
        name: str = "cbs",
        ready_timeout: float = 15.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one server")
        self.name = name
        self.size = size
        self.store = Path(store) if store is not None else None
        self.ready_timeout = ready_timeout
        self.route_ports = [free_port() for _ in range(size)]
        self.gateway_ports: list[int] = []
        #: Gateways of every cluster of a supercluster: name -> gateway ports.
        self.gateways: dict[str, list[int]] = {}
        self.nodes = [
            NatsServer(
                store=None if self.store is None else self.store / f"{name}-{i + 1}",
                name=f"{name}-{i + 1}",
                ready_timeout=ready_timeout,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def seed_url(self) -> str:
        """Every node's client URL, comma-separated (for ``NATS_URL``)."""
        return ",".join(self.urls)

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    def listen_for_gateways(self) -> None:
        self.gateway_ports = [free_port() for _ in range(self.size)]

    def config(self, index: int) -> str:
        """The cluster (and gateway) part of node ``index``'s configuration."""
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.route_ports)
        lines = [
            "cluster {",
            f"  name: {self.name}",
            f"  listen: 127.0.0.1:{self.route_ports[index]}",
            f"  routes: [{routes}]",
            "}",
        ]
        if self.gateway_ports:
            lines += [
                "gateway {",
                f"  name: {self.name}",
                f"  listen: 127.0.0.1:{self.gateway_ports[index]}",
                "  gateways: [",
            ]
            for other, ports in self.gateways.items():
                urls = ", ".join(f"nats://127.0.0.1:{port}" for port in ports)
                lines.append(f"    {{name: {other}, urls: [{urls}]}}")
            lines += ["  ]", "}"]
        return "\n".join(lines)

    def start(self) -> NatsCluster:
        """Start every node; return once the routes are up and JetStream has a
        meta leader."""
        for i, node in enumerate(self.nodes):
            node.extra_config = self.config(i)
        try:
            for node in self.nodes:  # in this thread: PR_SET_PDEATHSIG follows the thread
                node.start()
            self.wait_formed()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_formed(self, timeout: float | None = None) -> None:
        """Every running node knows the client URL of every running node, and
        JetStream answers on each."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        for node in self.nodes:
            if node.process is None:
                continue
            while not self._formed(node):
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"nats cluster {self.name}: {node.server_name} did not join"
                        f" in {timeout or self.ready_timeout:g} s"
                    )
                time.sleep(0.05)
        asyncio.run(self._wait_jetstream(deadline))

    def _formed(self, node: NatsServer) -> bool:
        running = {f"127.0.0.1:{n.port}" for n in self.nodes if n.process is not None}
        if len(running) < 2:
            return True  # no routes: a lone server announces no URLs
        try:
            info = read_info("127.0.0.1", node.port, 0.5)
        except (OSError, ValueError):
            return False
        return running <= set(info.get("connect_urls") or [])

    async def _wait_jetstream(self, deadline: float) -> None:
        import nats
        import nats.errors

        await self._wait_routes(deadline)
        for node in self.nodes:
            if node.process is None:
                continue
            nc = await nats.connect(node.url, allow_reconnect=False)
            try:
                while True:
                    try:
                        await nc.jetstream(timeout=0.5).account_info()
                        break
                    except (nats.errors.Error, TimeoutError) as exc:
                        if time.monotonic() > deadline:
                            raise Unavailable(
                                f"nats cluster {self.name}: JetStream not ready on"
                                f" {node.server_name}: {type(exc).__name__}"
                            ) from None
                        await asyncio.sleep(0.1)
            finally:
                await nc.close()

    async def _wait_routes(self, deadline: float) -> None:
        """A request from every running node reaches a subscriber on every other
        one (a route between each pair, not only URLs learnt by gossip)."""
        import nats

        running = [node for node in self.nodes if node.process is not None]
        if len(running) < 2:
            return
        conns = [await nats.connect(node.url, allow_reconnect=False) for node in running]
        try:

            async def answer(msg: Any) -> None:
                await msg.respond(b"")

            for i, nc in enumerate(conns):
                await nc.subscribe(f"cbs.cluster.probe.{i}", cb=answer)
                await nc.flush()
            for i in range(len(conns)):
                for j, nc in enumerate(conns):
                    while i != j:
                        try:
                            await nc.request(f"cbs.cluster.probe.{i}", b"", timeout=0.2)
                            break
                        except Exception:
                            if time.monotonic() > deadline:
                                raise Unavailable(
                                    f"nats cluster {self.name}: no route from"
                                    f" {running[j].server_name} to {running[i].server_name}"
                                ) from None
                            await asyncio.sleep(0.05)
        finally:
            for nc in conns:
                await nc.close()

    def node_at(self, url: str) -> NatsServer:
        """The node whose client URL is ``url`` (``nats://127.0.0.1:port``)."""
        port = urlsplit(url).port
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(url)

    def node_named(self, name: str) -> NatsServer:
        for node in self.nodes:
            if node.server_name == name:
                return node
        raise KeyError(name)

    def stop(self) -> None:
        """Stop every node by pid (SIGTERM, then SIGKILL), all at once."""
        _in_parallel([node.stop for node in self.nodes])

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class NatsSupercluster:
    """Clusters (by default ``A`` and ``B``, ``size`` nodes each) joined by
    gateways into one supercluster."""

    def __init__(
        self,
        size: int = 3,
        store: str | os.PathLike[str] | None = None,
        *,
        names: Sequence[str] = ("A", "B"),
        ready_timeout: float = 20.0,
    ) -> None:
        self.clusters = [
            NatsCluster(size, store, name=name, ready_timeout=ready_timeout) for name in names
        ]
        for cluster in self.clusters:
            cluster.listen_for_gateways()
        gateways = {c.name: c.gateway_ports for c in self.clusters}
        for cluster in self.clusters:
            cluster.gateways = gateways

    def __getitem__(self, name: str) -> NatsCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    @property
    def nodes(self) -> list[NatsServer]:
        return [node for cluster in self.clusters for node in cluster.nodes]

    def start(self) -> NatsSupercluster:
        try:
            for cluster in self.clusters:
                for i, node in enumerate(cluster.nodes):
                    node.extra_config = cluster.config(i)
            for node in self.nodes:  # in this thread (see NatsCluster.start)
                node.start()
            for cluster in self.clusters:
                cluster.wait_formed()
            self.wait_gateways()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_gateways(self, timeout: float = 15.0) -> None:
        """Each cluster sees the others' JetStream (the meta group spans the
        supercluster once gateways are up)."""
        asyncio.run(self._wait_gateways(time.monotonic() + timeout))

    async def _wait_gateways(self, deadline: float) -> None:
        import nats

        # A subscription in the last cluster answers a request from the first.
        last, first = self.clusters[-1], self.clusters[0]
        nc_b = await nats.connect(last.urls[0], allow_reconnect=False)
        nc_a = await nats.connect(first.urls[0], allow_reconnect=False)
        try:

            async def answer(msg: Any) -> None:
                await msg.respond(b"ok")

            await nc_b.subscribe("cbs.gateway.probe", cb=answer)
            await nc_b.flush()
            while True:
                try:
                    await nc_a.request("cbs.gateway.probe", b"", timeout=0.3)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise Unavailable("nats supercluster: gateways not up") from None
                    await asyncio.sleep(0.1)
        finally:
            await nc_a.close()
            await nc_b.close()

    def stop(self) -> None:
        _in_parallel([node.stop for node in self.nodes])

    def __enter__(self) -> NatsSupercluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- cbs server --cluster / --supercluster ------------------------------------------------


async def serve_cluster(body: Any, args: Any) -> int:
    """``cbs server --cluster N [--supercluster] [--store DIR]``: start the
    servers, print their seed URLs, run until SIGINT/SIGTERM, stop them all.
    A node that exits is reported on stderr; the command ends when none is left."""
    import sys

    if args.port is not None or args.secure:
        flag = "--port" if args.port is not None else "--secure"
        raise Unavailable(f"{flag} applies to a single server, not to --cluster/--supercluster")
    size = args.cluster or 3
    clusters: NatsSupercluster | NatsCluster = (
        NatsSupercluster(size, args.store) if args.supercluster else NatsCluster(size, args.store)
    )
    await asyncio.to_thread(clusters.start)
    groups = clusters.clusters if isinstance(clusters, NatsSupercluster) else [clusters]

    def ready() -> None:
        for cluster in groups:
            pids = ", ".join(map(str, cluster.pids))
            print(
                f"nats cluster {cluster.name} ready: {cluster.size} node(s), JetStream on"
                f" (pids {pids})",
                flush=True,
            )
        for cluster in groups:
            prefix = f"{cluster.name}: " if len(groups) > 1 else ""
            print(f"{prefix}export NATS_URL={cluster.seed_url}", flush=True)

    nodes = [node for cluster in groups for node in cluster.nodes]
    serving = asyncio.ensure_future(body.run_until_signal(on_ready=ready))
    exits: dict[asyncio.Future[Any], NatsServer] = {
        asyncio.ensure_future(node.wait_exit()): node for node in nodes
    }
    try:
        pending: set[asyncio.Future[Any]] = {serving, *exits}
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if serving in done:
                await serving
                return 0
            for future in done:
                print(f"{exits[future].server_name}: {future.result()}", file=sys.stderr)
            if pending == {serving}:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
                raise Unavailable("every nats-server of the cluster exited")
    finally:
        for future in exits:
            future.cancel()
        await asyncio.to_thread(clusters.stop)
