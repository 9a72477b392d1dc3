"""cbs-spec: body.yaml checked against its schema (errors with file, line and
column), reconciled live under load on NATS, rolled back when a new version
fails its health check, applied and diffed over $CBS.SPEC.*."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from load_kit import WorkLoad
from spec_cells import worker

import cbs.nats.plugin
import cbs.spec.plugin
from cbs.kernel import Body
from cbs.spec import Report, SpecError, SpecRunner, read_text, schema
from cbs.spec.control import send
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]
ROOT = Path(__file__).resolve().parents[1]


async def poll(condition: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- the schema and its errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("version: 1\ncells:\n  worker:\n    replica: 2\n", "4:5", "unknown field 'replica'"),
        ("version: 1\ncells:\n  worker:\n    replicas: many\n", "4:15", "integer or {min, max}"),
        ("version: 2\ncells: {}\n", "1:10", "expected 1"),
        ("version: 1\ncells:\n  Worker: {}\n", "3:3", "does not match"),
        ("version: 1\n", "1:1", "'cells' is a required property"),
        ("version: 1\ncells:\n  worker: [\n", "4:1", "not valid YAML"),
        (
            "version: 1\ncells:\n  w:\n    replicas: {min: 3, max: 2}\n",
            "body.yaml",
            "min 3 is above max 2",
        ),
    ],
)
def test_a_bad_spec_names_file_line_column_and_what_was_expected(
    text: str, where: str, what: str
) -> None:
    with pytest.raises(SpecError) as caught:
        read_text(text, "body.yaml")
    message = str(caught.value)
    assert message.startswith("body.yaml:" + where) or where == "body.yaml", message
    assert what in message, message
    assert "\n" not in message


def test_policies_map_to_the_plugins_options() -> None:
    spec = read_text(
        "version: 1\nbody: {id: shop}\ncells: {worker: {}}\n"
        "security: {creds: /run/shop.creds}\n"
        "services:\n  worker:\n    resilience: {retries: 2}\n"
        "    verbs:\n      work: {durable: true, resilience: {timeout: 1}}\n",
    )
    assert spec.body_id == "shop"
    assert spec.settings["nats_creds"] == "/run/shop.creds"
    assert spec.settings["durable"] == "worker.work"
    assert json.loads(spec.settings["breaker_config"]) == {
        "worker": {"retries": 2},
        "worker.work": {"timeout": 1},
    }


def _schema_fields(node: dict[str, Any], prefix: str = "") -> set[str]:
    root = schema()
    fields: set[str] = set()
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    for name, sub in node.get("properties", {}).items():
        fields.add(prefix + name)
        fields |= _schema_fields(sub, prefix + name + ".")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        fields |= _schema_fields(extra, prefix + "*.")
    for option in node.get("oneOf", []):
        fields |= _schema_fields(option, prefix)
    return fields


def test_docs_deployment_documents_every_field_of_the_schema() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.split("### Every field", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9_*.]+)` \|", section, flags=re.M))
    assert _schema_fields(schema()) == documented


# -- reconciling a running body ---------------------------------------------------------------


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # as editors do: the watcher sees the new file


async def start_runner(
    make_body: MakeBody, nats_server: Any, path: Path, *plugins: Any
) -> tuple[Body, SpecRunner]:
    body = make_body(
        cbs.nats.plugin,
        cbs.spec.plugin,
        CellsPlugin(worker("1.0.0")),
        *plugins,
        config={"transport": "nats", "nats_url": nats_server.url},
    )
    runner = SpecRunner(body, path)
    await runner.start()
    return body, runner


SPECS = [
    "cells: {worker: {}}",
    "cells: {worker: {}, helper: {factory: 'spec_cells:helper'}}",
    "cells: {worker: {factory: 'spec_cells:worker_v2'}, helper: {factory: 'spec_cells:helper'}}",
    "cells: {worker: {factory: 'spec_cells:worker_v2', replicas: 3}}",
    "cells: {worker: {factory: 'spec_cells:worker_v3', replicas: 3}}",
    "cells: {worker: {factory: 'spec_cells:worker_v3', replicas: 1},"
    " helper: {factory: 'spec_cells:helper'}}",
    "cells: {worker: {}}",
    "cells: {worker: {version: '1.0.0'}, helper: {factory: 'spec_cells:helper'}}",
    "cells: {worker: {factory: 'spec_cells:worker_v2'}}",
    "cells: {worker: {factory: 'spec_cells:worker_v3', replicas: {min: 1, max: 4}}}",
    "cells: {worker: {}}",
]


async def test_500_concurrent_requests_while_the_spec_changes_ten_times(
    nats_server: Any, make_body: MakeBody, tmp_path: Path
) -> None:
    path = tmp_path / "body.yaml"
    write(path, "version: 1\n" + SPECS[0] + "\n")
    body, runner = await start_runner(make_body, nats_server, path)
    caller = make_body(cbs.nats.plugin, config={"transport": "nats", "nats_url": nats_server.url})
    await caller.start(serve=False)
    load = WorkLoad(caller)
    kinds: set[str] = set()
    for text in SPECS[1:]:
        seen = len(runner.reports)
        burst = await load.burst(500)
        write(path, "version: 1\n" + text + "\n")
        await poll(lambda seen=seen: len(runner.reports) > seen, timeout=10)  # type: ignore[misc]
        report = runner.reports[-1]
        assert report.ok, report
        kinds |= {c.kind for c in report.applied}
        await asyncio.gather(*burst)

    assert load.failures == []
    assert {"add", "remove", "upgrade"} <= kinds
    assert load.versions >= {"1.0.0", "2.0.0", "3.0.0"}
    assert [c.id for c in body.served_cells] == ["worker"]
    assert body.served_cells[0].version == "1.0.0"
    # an invalid spec changes nothing and says why
    seen = len(runner.reports)
    write(path, "version: 1\ncells: {worker: {factory: 'spec_cells:nothing_here'}}\n")
    await poll(lambda: len(runner.reports) > seen, timeout=10)
    assert "spec_cells has no function nothing_here" in (runner.reports[-1].error or "")
    write(path, "version: 1\ncells: {worker: {replicas: -1}}\n")
    await poll(lambda: len(runner.reports) > seen + 1, timeout=10)
    assert (runner.reports[-1].error or "").startswith(f"{path}:2:")
    assert [(c.id, c.version) for c in body.served_cells] == [("worker", "1.0.0")]
    # the same spec again: idempotent
    assert (await runner.reconciler.apply(runner.spec)).applied == []  # type: ignore[union-attr]


async def test_a_new_version_that_fails_its_health_check_is_rolled_back(
    nats_server: Any, make_body: MakeBody, tmp_path: Path
) -> None:
    path = tmp_path / "body.yaml"
    write(path, "version: 1\ncells: {worker: {}}\n")
    body, runner = await start_runner(make_body, nats_server, path)
    seen = len(runner.reports)
    write(
        path,
        "version: 1\ncells:\n  worker:\n    factory: spec_cells:worker_broken\n"
        "    health: {verb: work, payload: {probe: true}}\n",
    )
    await poll(lambda: len(runner.reports) > seen, timeout=10)
    report: Report = runner.reports[-1]
    assert not report.ok
    assert (
        "worker 9.0.0: health check work failed: RuntimeError: not ready" in report.rolled_back[0]
    )
    assert [(c.id, c.version) for c in body.served_cells] == [("worker", "1.0.0")]
    reply = await body.request("worker", "work", {"n": 1})
    assert reply["version"] == "1.0.0"


async def test_apply_and_diff_over_the_control_subject(
    nats_server: Any, make_body: MakeBody, tmp_path: Path
) -> None:
    path = tmp_path / "shop.yaml"
    write(path, "version: 1\ncells: {worker: {}}\n")
    body, runner = await start_runner(make_body, nats_server, path)
    assert runner.spec.body_id == "shop"
    sender = make_body(cbs.nats.plugin, config={"transport": "nats", "nats_url": nats_server.url})
    await sender.start(serve=False)
    assert sender.bus is not None
    new = (
        "version: 1\ncells: {worker: {factory: 'spec_cells:worker_v2'}}\n"
        "settings: {request_timeout: 7}\n"
    )
    [diff] = await send(sender.bus, "diff", new, "new.yaml", body_id="shop", expect=1)
    assert {(c["kind"], c["target"]) for c in diff["changes"]} == {
        ("upgrade", "worker"),
        ("restart", "request_timeout"),
    }
    assert body.served_cells[0].version == "1.0.0"  # diff changes nothing
    [applied] = await send(sender.bus, "apply", new, "new.yaml", body_id="ALL", expect=1)
    assert applied["error"] is None
    assert [c["kind"] for c in applied["applied"]] == ["upgrade"]
    assert "needs a restart" in applied["restart"][0]["detail"]
    assert body.served_cells[0].version == "2.0.0"
    [again] = await send(sender.bus, "apply", new, "new.yaml", body_id="shop", expect=1)
    assert again["applied"] == []  # converged: nothing more to do
    [bad] = await send(
        sender.bus, "apply", "version: 1\ncells: 3\n", "bad.yaml", body_id="shop", expect=1
    )
    assert bad["error"].startswith("bad.yaml:2:8:")
    assert body.served_cells[0].version == "2.0.0"


async def test_a_change_the_body_refuses_is_reported_and_the_rest_goes_on(
    make_body: MakeBody,
) -> None:
    from cbs.spec import Reconciler

    body = make_body(cbs.spec.plugin, CellsPlugin(worker("1.0.0")))
    await body.start(serve=False)
    reconciler = Reconciler(body)
    first = await reconciler.apply(read_text("version: 1\ncells: {worker: {}}\n"))
    assert first.ok and [c.kind for c in first.applied] == ["add"]
    report = await reconciler.apply(
        read_text(
            "version: 1\ncells:\n  worker: {}\n  clash: {factory: 'spec_cells:clash'}\n"
            "  helper: {factory: 'spec_cells:helper'}\n"
        )
    )
    assert not report.ok
    assert report.rolled_back[0].startswith("clash: add failed: PluginError")
    assert sorted(c.id for c in body.served_cells) == ["helper", "worker"]
    assert (await body.request("worker", "work", {"n": 1}))["version"] == "1.0.0"


async def test_a_durable_verb_no_cell_serves_is_refused(make_body: MakeBody) -> None:
    from cbs.jetstream import plugin as jetstream_plugin
    from cbs.spec import Reconciler

    body = make_body(cbs.spec.plugin, jetstream_plugin, CellsPlugin(worker("1.0.0")))
    await body.start(serve=False)
    reconciler = Reconciler(body)
    report = await reconciler.apply(
        read_text(
            "version: 1\ncells: {worker: {}}\n"
            "services:\n  worker:\n    verbs: {wrok: {durable: true}}\n"
        )
    )
    assert report.error == (
        "services.worker.verbs.wrok.durable: no cell of this spec serves worker.wrok"
        " (served: worker.work)"
    )
    assert body.served_cells == []  # nothing changed
    ok = await reconciler.apply(
        read_text(
            "version: 1\ncells: {worker: {}}\n"
            "services:\n  worker:\n    verbs: {work: {durable: true}}\n"
        )
    )
    assert ok.error is None and [c.id for c in body.served_cells] == ["worker"]


async def test_sidecars_run_as_child_processes_without_a_scaler(
    make_body: MakeBody, tmp_path: Path
) -> None:
    import sys

    from cbs_process import alive, wait_gone

    sleeper = json.dumps([sys.executable, "-c", "import time; time.sleep(60)"])
    path = tmp_path / "body.yaml"
    path.write_text(f"version: 1\ncells:\n  worker: {{}}\n  tick: {{command: {sleeper}}}\n")
    body = make_body(cbs.spec.plugin, CellsPlugin(worker()))
    runner = SpecRunner(body, path)
    await runner.start()
    assert runner.reconciler is not None
    sidecars = runner.reconciler.sidecars
    [first] = sidecars.pids("tick")
    assert alive(first)
    two = read_text(
        f"version: 1\ncells:\n  worker: {{}}\n  tick: {{command: {sleeper}, replicas: 2}}\n"
    )
    assert (await runner.reconciler.apply(two)).ok
    assert len(sidecars.pids("tick")) == 2 and first in sidecars.pids("tick")
    report = await runner.reconciler.apply(read_text("version: 1\ncells: {worker: {}}\n"))
    assert [(c.kind, c.target) for c in report.applied] == [("sidecar", "tick")]
    assert sidecars.pids("tick") == []
    assert wait_gone(first)
    await runner.reconciler.apply(two)
    pids = sidecars.pids("tick")
    await body.stop()  # stops the runner, which stops its sidecars
    assert all(wait_gone(pid) for pid in pids)
