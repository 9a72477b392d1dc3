"""The example plugin quoted by docs/writing-plugins.md, run in a real body."""

from __future__ import annotations

import argparse
import json
import os
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from example_kit import load_example

from cbs.contracts import BadRequest
from cbs.kernel import Body, CellFieldRegistry, PluginError, hookimpl, hookspecs
from cbs.kernel.commands import add_cell_fields, cells_report, plugins_report
from cbs.testing import HookRecorder, call_cell

EXAMPLE = Path(__file__).parent / "examples" / "example_plugin.py"
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("cbs_"))
#: The order documented in the hookspecs module docstring.
DOCUMENTED_ORDER = list(
    dict.fromkeys(re.findall(r"cbs_\w+", (hookspecs.__doc__ or "").split("Firing order")[1]))
)
ECHO_CELL = "example_echo"
#: Hooks that fire while Body(...) is built, before a recorder can attach.
BUILD_HOOKS = 7

MakeBody = Callable[..., Body]


@pytest.fixture
def example() -> types.ModuleType:
    return load_example()


def order_plugin(calls: list[str]) -> types.ModuleType:
    """A plugin implementing every hook that only notes the hook's name."""
    module = types.ModuleType("order_recorder")

    def recorder(hook_name: str) -> Callable[[], None]:
        def impl() -> None:
            calls.append(hook_name)

        return impl

    for name in HOOKS:
        setattr(module, name, hookimpl(recorder(name)))
    return module


def test_documented_order_names_every_hook() -> None:
    assert sorted(DOCUMENTED_ORDER) == HOOKS


def test_registers_one_of_each(make_body: MakeBody, example: types.ModuleType) -> None:
    body = make_body(example)
    option = body.options.get("example_tag")
    assert option is not None and option.plugin == "example_plugin"
    assert body.config["example_tag"] == "example"
    command = body.commands.get("example-echo")
    assert command is not None and command.plugin == "example_plugin"
    transport = body.transports.get("example_local")
    assert transport is not None and transport.item.priority == -1
    assert body.transport_name() == "local"
    assert body.cells.names() == [ECHO_CELL]
    assert body.cells.get(ECHO_CELL) is not None
    assert body.cells.cell(ECHO_CELL).max_concurrency == 10
    assert body.middleware.client.names() == ["example_tag"]
    assert body.middleware.server.names() == ["example_count"]

    report = {entry["name"]: entry for entry in plugins_report(body)}
    assert set(report) == {"local", "core", "example_plugin"}
    entry = report["example_plugin"]
    assert entry["builtin"] is False
    assert entry["hooks"] == HOOKS
    assert entry["registered"] == {
        "transports": ["example_local"],
        "cells": [ECHO_CELL],
        "middleware": ["example_tag", "example_count"],
        "options": ["example_tag"],
        "commands": ["example-echo"],
        "cell_fields": ["example_tag"],
        "endpoint_options": ["audited"],
    }
    echo = next(e for e in body.cells.cell(ECHO_CELL).endpoints if e.verb == "echo")
    assert body.endpoint_options.metadata(echo) == {"example.audited": "true"}


async def test_requests_go_through_both_middleware(
    make_body: MakeBody, example: types.ModuleType
) -> None:
    body = make_body(example)
    await body.start()
    counts = body.stash[example.REQUESTS]
    # cbs_body_started (async) sent one self-check request.
    assert counts == {"cbs.example.echo": 1}

    reply = await body.request("example", "echo", {"text": "hi"})
    assert reply == {"text": "hi", "tag": "example"}  # header added by the client middleware
    assert await body.request("example", "shout", {"text": "hi"}) == {"text": "HI"}
    with pytest.raises(BadRequest, match="'text' must be a string"):
        await body.request("example", "echo", {"text": 5})
    assert counts == {"cbs.example.echo": 3, "cbs.example.shout": 1}


async def test_option_reaches_the_middleware(
    make_body: MakeBody, example: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CBS_EXAMPLE_TAG", "from-env")
    assert make_body(example).config["example_tag"] == "example"  # the kit ignores $CBS_*
    body = make_body(example, environ=os.environ)
    await body.start()
    assert (await body.request("example", "echo", {"text": "x"}))["tag"] == "from-env"

    given = make_body(example, config={"example_tag": "given"})
    await given.start()
    assert (await given.request("example", "echo", {"text": "x"}))["tag"] == "given"


async def test_no_hook_runs_per_message(
    make_body: MakeBody, example: types.ModuleType, hook_recorder: HookRecorder
) -> None:
    body = make_body(example)
    await body.start()
    hook_recorder(body)
    for i in range(20):
        await body.request("example", "echo", {"text": str(i)})
    assert hook_recorder.calls == []


async def test_lifecycle_hooks_fire_in_documented_order(
    make_body: MakeBody, example: types.ModuleType, hook_recorder: HookRecorder
) -> None:
    calls: list[str] = []
    body = make_body(example, order_plugin(calls))
    hook_recorder(body)
    await body.start()
    await body.replace_cell(example.make_echo_cell())  # a new version at run time
    await body.stop()

    assert list(dict.fromkeys(calls)) == DOCUMENTED_ORDER
    # Registration hooks run once per implementing plugin; lifecycle ones once.
    assert list(dict.fromkeys(hook_recorder.calls)) == DOCUMENTED_ORDER[BUILD_HOOKS:]
    assert body.stash[example.EVENTS] == [
        "body_starting",
        f"cell_started {ECHO_CELL}",
        "body_started",
        f"cell_started {ECHO_CELL}",  # the new version serves first,
        f"cell_stopping {ECHO_CELL}",  # then the old one drains
        f"cell_stopped {ECHO_CELL}",
        "body_stopping",
        f"cell_stopped {ECHO_CELL}",
        "body_stopped",
    ]


async def test_registration_hooks_run_once_per_body(
    make_body: MakeBody, example: types.ModuleType
) -> None:
    calls: list[str] = []
    body = make_body(example, order_plugin(calls))
    for _ in range(2):
        await body.start()
        await body.stop()
    assert calls.count("cbs_register_cells") == 1
    assert calls.count("cbs_register_middleware") == 1
    assert calls.count("cbs_body_starting") == 2
    assert calls.count("cbs_cell_stopped") == 2


async def test_transport_chosen_by_option(make_body: MakeBody, example: types.ModuleType) -> None:
    body = make_body(example, config={"transport": "example_local"})
    await body.start()
    assert isinstance(body.bus, example.ExampleBus)
    assert body.bus.name == "example_local"
    assert await body.request("example", "shout", {"text": "a"}) == {"text": "A"}


async def test_command_runs(
    make_body: MakeBody, example: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    body = make_body(example)
    command = body.commands.get("example-echo")
    assert command is not None and command.item.configure is not None
    parser = argparse.ArgumentParser()
    command.item.configure(parser)
    result: Any = command.item.run(body, parser.parse_args(["hello"]))
    assert await result == 0
    assert capsys.readouterr().out == "hello\n"
    assert body.state == "stopped"


async def test_cells_command_shows_the_field(
    make_body: MakeBody, example: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    body = make_body(example, config={"example_tag": "t1"})
    command = body.commands.get("cells")
    assert command is not None and command.item.configure is not None
    parser = argparse.ArgumentParser()
    command.item.configure(parser)
    result: Any = command.item.run(body, parser.parse_args([]))
    assert await result == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(ECHO_CELL) and line.endswith("  example_tag=t1")
    result = command.item.run(body, parser.parse_args(["--json"]))
    assert await result == 0
    assert [row["example_tag"] for row in json.loads(capsys.readouterr().out)] == ["t1"]


async def test_a_failing_cells_field_is_logged_and_skipped(
    make_body: MakeBody, example: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        name = "broken_field"

        @staticmethod
        async def provide(body: Body, cells: list[dict[str, Any]]) -> dict[str, Any]:
            raise RuntimeError("no luck")

        @hookimpl
        def cbs_add_cell_fields(self, fields: CellFieldRegistry) -> None:
            fields.add("broken", self.provide)

    body = make_body(example, Broken())
    rows = cells_report(body)
    given = await add_cell_fields(body, rows)
    assert [f.name for f in given] == ["example_tag"]
    assert "broken" not in rows[0] and rows[0]["example_tag"] == "example"
    assert "cbs cells: field broken failed: RuntimeError: no luck" in caplog.text


async def test_cell_alone_with_call_cell(example: types.ModuleType) -> None:
    cell = example.make_echo_cell()
    assert await call_cell(cell, "echo", {"text": "x"}) == {"text": "x", "tag": None}
    assert await call_cell(cell, "echo", {"text": "x"}, headers={"x-example-tag": "t"}) == {
        "text": "x",
        "tag": "t",
    }
    with pytest.raises(BadRequest):
        await call_cell(cell, "echo", {})


def test_misspelled_hook_is_refused(make_body: MakeBody) -> None:
    typo = types.ModuleType("typo_plugin")

    def cbs_body_strated(body: Body) -> None:
        pass

    typo.cbs_body_strated = hookimpl(cbs_body_strated)  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="cbs_body_strated"):
        make_body(typo)


def test_unmarked_hook_is_refused(make_body: MakeBody) -> None:
    unmarked = types.ModuleType("unmarked_plugin")

    def cbs_body_started(body: Body) -> None:
        pass

    unmarked.cbs_body_started = cbs_body_started  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="lacks the @hookimpl marker"):
        make_body(unmarked)
