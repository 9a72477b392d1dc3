"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and a status page.

A stdlib WSGI server in a daemon thread (one thread per request), with
prometheus_client's own WSGI app for ``/metrics``. It reads the body's state
from its thread without touching the event loop, except ``/healthz``, which
asks the loop to answer (a wedged loop is a dead body).
"""

from __future__ import annotations

import html
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from cbs.kernel import Body
from cbs.metrics.collector import Exposed
from cbs.metrics.health import Health, alive, readiness
from cbs.metrics.stats import BodyStats, EndpointStats

__all__ = ["Health", "MetricsServer", "readiness", "status_page"]

log = logging.getLogger("cbs.metrics")

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

# -- the status page -----------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;
       color: #1d232a; background: #fbfbfc; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #56606b; } .ok { color: #17803d; font-weight: 600; }
.bad { color: #b42318; font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .4em .7em; border-bottom: 1px solid #e3e6ea;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 13px ui-monospace, monospace; } nav a { margin-right: 1em; }
"""


def _mean_ms(endpoints: Iterable[EndpointStats]) -> str:
    endpoints = list(endpoints)
    requests = sum(e.requests for e in endpoints)
    if not requests:
        return "-"
    return f"{sum(e.seconds for e in endpoints) / requests * 1000:.2f} ms"


def _errors(endpoints: Iterable[EndpointStats]) -> str:
    codes: dict[str, int] = {}
    for e in endpoints:
        for code, count in list(e.errors.items()):
            codes[code] = codes.get(code, 0) + count
    total = sum(codes.values())
    if not total:
        return "0"
    detail = ", ".join(f"{html.escape(c)} {n}" for c, n in sorted(codes.items()))
    return f"{total} <span class=meta>({detail})</span>"


def status_page(body: Body, health: Health, stats: BodyStats) -> str:
    """A small HTML page: readiness, the cells served with their subjects and
    counts, the subjects this body sent requests to."""
    ready, report = readiness(body, health)
    esc = html.escape
    verdict = '<span class="ok">ready</span>' if ready else '<span class="bad">not ready</span>'
    transport = report["bus"]["transport"] or "none"
    bus_state = "connected" if report["bus"]["connected"] else "disconnected"
    rows = []
    for cell in body.served_cells:
        subjects = [f"cbs.{cell.service}.{e.verb}" for e in cell.endpoints]
        served = [stats.server[s] for s in subjects if s in stats.server]
        subject_cells = "<br>".join(f"<code>{esc(s)}</code>" for s in subjects)
        state = report["cells"].get(cell.id, "")
        rows.append(
            f'<tr id="cell-{esc(cell.id)}"><td><strong>{esc(cell.id)}</strong>'
            f"<br><span class=meta>{esc(cell.category)} · {esc(cell.version)} · {esc(state)}"
            f"</span></td><td>{subject_cells}</td>"
            f'<td class="num">{sum(e.requests for e in served)}</td>'
            f'<td class="num">{_errors(served)}</td>'
            f'<td class="num">{sum(e.in_flight for e in served)}</td>'
            f'<td class="num">{_mean_ms(served)}</td></tr>'
        )
    cells_table = (
        "<table><thead><tr><th>cell</th><th>subjects</th><th class=num>requests</th>"
        "<th class=num>errors</th><th class=num>in flight</th><th class=num>mean latency</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p class=meta>This process serves no cells.</p>"
    )
    sent = []
    for subject, e in sorted(stats.client.items()):
        sent.append(
            f"<tr><td><code>{esc(subject)}</code></td><td class=num>{e.requests}</td>"
            f"<td class=num>{_errors([e])}</td><td class=num>{e.in_flight}</td>"
            f"<td class=num>{_mean_ms([e])}</td></tr>"
        )
    sent_table = (
        "<table><thead><tr><th>subject</th><th class=num>requests</th><th class=num>errors</th>"
        "<th class=num>in flight</th><th class=num>mean latency</th></tr></thead><tbody>"
        + "".join(sent)
        + "</tbody></table>"
        if sent
        else "<p class=meta>No requests sent yet.</p>"
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(health.since))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>CBS body {os.getpid()}</title><style>{_STYLE}</style></head>
<body><h1>CBS body</h1>
<p class="meta">{verdict} · pid {os.getpid()} · transport {esc(transport)} ({bus_state})
· {esc(report["state"])} (since {started}) · refreshes every 5 s</p>
<h2>Cells served</h2>{cells_table}
<h2>Requests sent</h2>{sent_table}
<nav><p><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>
<a href="/readyz">/readyz</a></p></nav>
</body></html>
"""


# -- the server -------------------------------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def _json(start: StartResponse, status: str, data: dict[str, Any]) -> list[bytes]:
    payload = (json.dumps(data) + "\n").encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


class MetricsServer:
    """Serves one body's endpoints on ``host:port`` (port 0: any free port);
    ``/metrics`` shows the body's ``registry`` and prometheus_client's default one."""

    def __init__(
        self,
        body: Body,
        health: Health,
        stats: BodyStats,
        registry: CollectorRegistry,
        host: str,
        port: int,
    ):
        self.body = body
        self.health = health
        self.stats = stats
        self.host = host
        self.port = port
        self._metrics = make_wsgi_app(Exposed(registry))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def app(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics(environ, start)
            return result
        if path == "/healthz":
            if alive(self.health):
                return _json(start, "200 OK", {"alive": True})
            return _json(start, "503 Service Unavailable", {"alive": False})
        if path == "/readyz":
            ready, report = readiness(self.body, self.health)
            return _json(start, "200 OK" if ready else "503 Service Unavailable", report)
        if path in ("/", "/index.html"):
            page = status_page(self.body, self.health, self.stats).encode()
            start(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))],
            )
            return [page]
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /, /metrics, /healthz or /readyz\n"]

    def start(self) -> None:
        server = make_server(
            self.host,
            self.port,
            self.app,
            server_class=_Server6 if ":" in self.host else _Server,
            handler_class=_QuietHandler,
        )
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"cbs-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
