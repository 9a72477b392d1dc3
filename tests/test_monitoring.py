"""The monitoring that ships with the Helm chart: the Grafana dashboard
(deploy/helm/cbs/files/grafana-dashboard.json) and the Prometheus alerting
rules (deploy/helm/cbs/files/prometheus-rules.yaml).

Every metric and label their PromQL uses must be one that CBS exports: a real
body (nats, jetstream with durable verbs, breaker, metrics) and a real pool
supervisor (``cbs run --workers``) are scraped over HTTP, and each expression,
parsed with ``promql-parser``, is checked against the samples seen. The files'
structure is checked too (promtool is not needed). Also the metrics added for
them: ``cbs_ready`` and the JetStream consumer gauges."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from breaker_cells import Flaky
from cbs_process import CbsProcess
from jetstream_kit import FAST, SCHEMA, Sink
from pool_kit import cbs_env
from prometheus_client.parser import text_string_to_metric_families

from cbs.breaker import plugin as breaker_plugin
from cbs.contracts import CbsError
from cbs.greeter import plugin as greeter_plugin
from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream import runtime as jetstream_runtime
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics import registry
from cbs.metrics.plugin import HEALTH, server_url
from cbs.nats import plugin as nats_plugin
from cbs.nats.server import free_port

FILES = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "cbs" / "files"
DASHBOARD = FILES / "grafana-dashboard.json"
RULES = FILES / "prometheus-rules.yaml"

#: Labels Prometheus adds to every series of a target when it scrapes it.
TARGET_LABELS = frozenset({"job", "instance"})
#: Series Prometheus makes itself for every target, with their labels.
SYNTHETIC = {"up": set(TARGET_LABELS)}
#: Grafana's built-in interval variables, as a PromQL duration (to parse).
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

Exported = dict[str, set[str]]  # sample name -> the label names seen on it


# -- PromQL ---------------------------------------------------------------------------


def parse(expr: str) -> Any:
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    return promql_parser.parse(expr)


def _labels(modifier: Any) -> list[str]:
    return list(modifier.labels) if modifier is not None else []


def problems(expr: str, exported: Exported) -> list[str]:
    """What ``expr`` uses that the scraped samples do not have: metric names
    (exact sample names, so ``_bucket``, ``_sum``, ``_count`` and ``_total``
    are checked as Prometheus stores them), matcher labels on their metric,
    and grouping labels (``by``, ``without``, ``on``, ``ignoring``,
    ``group_left``) on the metrics beneath them."""
    found: list[str] = []
    known = {**exported, **SYNTHETIC}

    def walk(node: Any) -> set[str]:
        """The label names the series of ``node`` may carry (checking on the way)."""
        if isinstance(node, promql_parser.MatrixSelector):
            return walk(node.vector_selector)
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if name not in known:
                found.append(f"metric {name!r} is not exported")
                return set()
            have = known[name] | TARGET_LABELS
            matchers = list(node.matchers.matchers)
            for group in node.matchers.or_matchers:
                matchers.extend(group)
            for matcher in matchers:
                if matcher.name != "__name__" and matcher.name not in have:
                    found.append(f"label {matcher.name!r} is not on {name}")
            return have
        if isinstance(node, promql_parser.AggregateExpr):
            below = walk(node.expr)
            if node.param is not None:
                walk(node.param)
            for label in _labels(node.modifier):
                if below and label not in below:
                    found.append(f"label {label!r} (by/without) is not on the series aggregated")
            if node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By:
                return set(node.modifier.labels)
            return below
        if isinstance(node, promql_parser.BinaryExpr):
            left, right = walk(node.lhs), walk(node.rhs)
            both = left | right
            modifier = node.modifier
            if modifier is not None:
                used = _labels(modifier.matching) + list(modifier.group_labels or [])
                for label in used:
                    if both and label not in both:
                        found.append(f"label {label!r} (on/group) is not on either side")
            return left or right
        if isinstance(node, promql_parser.Call):
            below: set[str] = set()
            for arg in node.args:
                below |= walk(arg)
            return below - {"le"} if node.func.name == "histogram_quantile" else below
        if isinstance(
            node, (promql_parser.ParenExpr, promql_parser.SubqueryExpr, promql_parser.UnaryExpr)
        ):
            return walk(node.expr)
        return set()  # number and string literals

    walk(parse(expr))
    return found


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if isinstance(child, promql_parser.Expr):
                walk(child)
        if isinstance(node, promql_parser.Call):
            for arg in node.args:
                walk(arg)

    walk(parse(expr))
    return names


# -- the files ------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query, variable query and rule."""
    board = dashboard()
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert inner, f"variable {variable['name']}: {query}"
            # label_values(SELECTOR, LABEL): the label must be on the selector's metric.
            found.append((f"variable {variable['name']}", f"sum by ({inner[2]}) ({inner[1]})"))
    found += [(f"rule {rule['alert']}", rule["expr"]) for rule in rules()]
    return found


# -- scraping a running body and a pool supervisor -------------------------------------


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def samples(text: str) -> Exported:
    exported: Exported = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def quick_consumer_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream_runtime, "CONSUMER_INFO_PERIOD", 0.1)


async def test_every_metric_and_label_used_is_exported(
    nats_server: Any, make_body: Any, processes: list[CbsProcess], quick_consumer_info: None
) -> None:
    # A pool supervisor with one worker (its /metrics has the cbs_pool_* series).
    pool_port = free_port()
    supervisor = CbsProcess(
        "run",
        "--nats-url",
        nats_server.url,
        "--pool-id",
        "mon",
        "--workers",
        "1",
        "--metrics-port",
        str(pool_port),
        "--pool-worker-set",
        "metrics_port=0",
        env=cbs_env(),
    )
    processes.append(supervisor)

    # A body with every plugin whose metrics the dashboard and rules use.
    flaky, sink = Flaky(), Sink()
    config = {
        "nats_url": nats_server.url,
        "metrics_port": 0,
        "breaker_config": {"flaky": {"failure_threshold": 1, "cooldown": 60}},
        **FAST,
    }
    plugins = (nats_plugin, jetstream_plugin, breaker_plugin, metrics_plugin, flaky, sink)
    body = make_body(*plugins, config=config)
    await body.start()
    url = server_url(body)
    assert url is not None
    await body.request("sink", "ask", {"n": 1}, schema=SCHEMA)
    flaky.mode = "bad"
    with pytest.raises(CbsError):
        await body.request("flaky", "read", {}, schema="flaky/v1/Any")  # BadRequest
    flaky.mode = "fail"
    for _ in range(2):  # Internal, which opens the breaker; then Unavailable at once
        with pytest.raises(CbsError):
            await body.request("flaky", "work", {}, schema="flaky/v1/Any")
    await body.send("sink", "strict", {"n": 2}, schema=SCHEMA)  # a dead letter

    async def body_complete() -> bool:
        text = await asyncio.to_thread(scrape, url + "metrics")
        return (
            "cbs_jetstream_dead_lettered_total{" in text
            and "cbs_jetstream_consumer_pending{" in text
            and 'cbs_breaker_state{service="flaky",verb="work"} 2.0' in text
        )

    await until(body_complete, 20, "the body's dead letter, consumer and breaker series")

    async def pool_complete() -> bool:
        try:
            text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{pool_port}/metrics")
        except (urllib.error.URLError, ConnectionError):
            return False
        return re.search(r"^cbs_pool_workers_serving\{.*\} 1\.0$", text, re.M) is not None

    await until(pool_complete, 60, "a serving worker in the supervisor's metrics")

    exported = samples(await asyncio.to_thread(scrape, url + "metrics"))
    pool = samples(await asyncio.to_thread(scrape, f"http://127.0.0.1:{pool_port}/metrics"))
    for name, labels in pool.items():
        exported.setdefault(name, set()).update(labels)

    used = expressions()
    assert len(used) > 40
    missing = {where: found for where, expr in used if (found := problems(expr, exported))}
    assert missing == {}
    # Every family the issue asks for is used somewhere.
    names = set().union(*(metric_names(expr) for _, expr in used))
    for wanted in (
        "cbs_server_requests_total",
        "cbs_server_errors_total",
        "cbs_server_request_duration_seconds_bucket",
        "cbs_server_requests_in_flight",
        "cbs_breaker_state",
        "cbs_jetstream_consumer_pending",
        "cbs_jetstream_dead_lettered_total",
        "cbs_pool_workers_alive",
        "cbs_pool_restarts_total",
        "cbs_pool_busy",
        "cbs_ready",
    ):
        assert wanted in names, wanted

    # The check catches what is not exported: a name, a suffix, a label.
    assert problems("rate(cbs_server_requests_totl[5m])", exported) == [
        "metric 'cbs_server_requests_totl' is not exported"
    ]
    assert problems("cbs_server_request_duration_seconds_total", exported) == [
        "metric 'cbs_server_request_duration_seconds_total' is not exported"
    ]
    assert problems('cbs_breaker_state{code="x"}', exported) == [
        "label 'code' is not on cbs_breaker_state"
    ]
    assert problems("sum by (pool) (rate(cbs_server_requests_total[5m]))", exported) == [
        "label 'pool' (by/without) is not on the series aggregated"
    ]
    assert problems("cbs_ready / on (cell) cbs_cells_up", exported) == [
        "label 'cell' (on/group) is not on either side"
    ]
    assert problems('sum by (job, service) (cbs_cell_instances_up{job="x"})', exported) == []

    code, _, err = supervisor.stop()
    assert code == 0, err


# -- the files' structure -------------------------------------------------------------

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_the_rule_file_is_a_prometheus_rule_file() -> None:
    loaded = yaml.safe_load(RULES.read_text())
    assert list(loaded) == ["groups"]
    groups = loaded["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    alerts: list[str] = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        for rule in group["rules"]:
            name = rule.get("alert")
            assert isinstance(name, str) and re.fullmatch(r"Cbs[A-Za-z0-9]+", name), rule
            alerts.append(name)
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
            assert DURATION.match(str(rule["for"])), name
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert set(rule["annotations"]) == {"summary", "description"}, name
            assert all(v.strip() for v in rule["annotations"].values()), name
            parse(rule["expr"])  # raises on PromQL that does not parse
            # Templates only name labels the alert's series keep.
            for text in rule["annotations"].values():
                for label in re.findall(r"\$labels\.(\w+)", text):
                    assert re.search(rf"\b{label}\b", rule["expr"]) or label in TARGET_LABELS, (
                        name,
                        label,
                    )
    assert len(set(alerts)) == len(alerts)
    for wanted in (
        "CbsErrorRatioHigh",
        "CbsLatencyP95High",
        "CbsLatencyP99High",
        "CbsDurableLagHigh",
        "CbsBreakerOpen",
        "CbsBodyNotReady",
        "CbsTargetDown",
        "CbsPoolWorkerRestarts",
        "CbsPoolCrashLoop",
    ):
        assert wanted in alerts, wanted
    with pytest.raises(ValueError):
        parse("sum by (service (cbs_ready)")  # the parser does reject bad PromQL


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "service"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    everything = list(panels(board))
    ids = [panel["id"] for panel in everything]
    assert len(set(ids)) == len(ids)
    taken: set[tuple[int, int]] = set()
    for panel in everything:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert '$job"' in target["expr"], f"{panel['title']}: not filtered by $job"
    titles = " ".join(panel["title"] for panel in everything).lower()
    for wanted in ("requests", "errors", "p99", "in flight", "breaker", "lag", "workers"):
        assert wanted in titles, wanted


# -- the metrics added for them -------------------------------------------------------


async def test_cbs_ready_follows_readiness(make_body: Any) -> None:
    body = make_body(greeter_plugin, metrics_plugin)
    await body.start()
    own = registry(body)
    assert own is not None
    assert own.get_sample_value("cbs_ready") == 1.0
    body.stash[HEALTH].stopping = True  # draining
    assert own.get_sample_value("cbs_ready") == 0.0
    await body.stop()
    assert own.get_sample_value("cbs_ready") is None  # the body's series are gone


async def test_durable_lag_rises_and_falls(
    nats_server: Any, make_body: Any, quick_consumer_info: None
) -> None:
    sink = Sink()
    config = {"nats_url": nats_server.url, "jetstream_concurrency": 1, **FAST}
    body = make_body(nats_plugin, jetstream_plugin, metrics_plugin, sink, config=config)
    await body.start()
    own = registry(body)
    assert own is not None
    labels = {"service": "sink", "verb": "slow"}

    def value(name: str) -> float | None:
        found: float | None = own.get_sample_value(name, labels)
        return found

    async def read_zero() -> bool:
        return value("cbs_jetstream_consumer_pending") == 0.0

    await until(read_zero, 10, "the consumer read back")
    for n in range(6):
        await body.send("sink", "slow", {"n": n, "sleep": 0.5}, schema=SCHEMA)
    seen: list[float] = []

    async def lagging() -> bool:
        seen.append(value("cbs_jetstream_consumer_pending") or 0.0)
        return seen[-1] >= 2 and value("cbs_jetstream_consumer_ack_pending") == 1.0

    await until(lagging, 10, "a lag of stored requests")

    async def caught_up() -> bool:
        return (
            sum(sink.seen.values()) == 6
            and value("cbs_jetstream_consumer_pending") == 0.0
            and value("cbs_jetstream_consumer_ack_pending") == 0.0
        )

    await until(caught_up, 20, "the lag back to 0")
    assert value("cbs_jetstream_dead_lettered_total") is None  # none dead-lettered
    await body.send("sink", "strict", {"n": 9}, schema=SCHEMA)

    async def dead() -> bool:
        found = own.get_sample_value(
            "cbs_jetstream_dead_lettered_total", {"service": "sink", "verb": "strict"}
        )
        return found == 1.0

    await until(dead, 10, "one dead letter counted")
    await body.stop()
    assert own.get_sample_value("cbs_jetstream_consumer_pending", labels) is None


def test_the_docs_describe_every_alert() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"^\| `(Cbs\w+)` \|", docs, re.M))
    assert documented == {rule["alert"] for rule in rules()}
