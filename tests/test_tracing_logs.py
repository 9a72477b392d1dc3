"""cbs-tracing: log records made while a request is sent or handled carry the
trace id and the envelope id."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Cell, CellRegistry, Config, current_request, hookimpl
from cbs.tracing import logs
from cbs.tracing import plugin as tracing_plugin

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class ChattyPlugin:
    """A cell that logs one line per request."""

    name = "chatty"

    def __init__(self) -> None:
        self.cell = Cell("chatty", category="logic", version="1.0.0", purpose="Logs")
        self.cell.add_verb("say", self._say, schema="chatty/v1/Any")
        self.envelope_ids: list[str] = []

    async def _say(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.envelope_ids.append(current_request().envelope.id)
        logging.getLogger("chatty").warning("handling")
        return {}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


async def test_records_carry_trace_and_envelope_ids(
    make_body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chatty = ChattyPlugin()
    body = make_body(greeter_plugin, tracing_plugin, chatty)
    await body.start()
    with caplog.at_level(logging.WARNING, logger="chatty"):
        await body.request("chatty", "say", {}, headers={"traceparent": TRACEPARENT})
    (record,) = [r for r in caplog.records if r.name == "chatty"]
    assert record.otelTraceID == TRACE_ID  # type: ignore[attr-defined]
    assert len(record.otelSpanID) == 16  # type: ignore[attr-defined]
    assert record.cbs_envelope_id == chatty.envelope_ids[0]  # type: ignore[attr-defined]

    # Outside a request: no ids.
    logging.getLogger("chatty").warning("idle")
    idle = caplog.records[-1]
    assert idle.otelTraceID == "0" and idle.cbs_envelope_id == ""  # type: ignore[attr-defined]


def test_formatter_appends_ids_to_the_first_line() -> None:
    formatter = logs.IdsFormatter(logging.Formatter("%(name)s: %(message)s"))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    assert formatter.format(record) == "x: boom"
    record.otelTraceID = TRACE_ID
    record.cbs_envelope_id = "e1"
    assert formatter.format(record) == f"x: boom [trace_id={TRACE_ID} envelope_id=e1]"
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    first, _, rest = formatter.format(record).partition("\n")
    assert first.endswith("envelope_id=e1]") and "ValueError: bad" in rest


def test_only_plain_text_formatters_are_wrapped() -> None:
    class JsonFormatter(logging.Formatter):
        pass

    root = logging.getLogger()
    plain, custom = logging.StreamHandler(), logging.StreamHandler()
    plain.setFormatter(logging.Formatter("%(message)s"))
    custom.setFormatter(JsonFormatter())
    root.addHandler(plain)
    root.addHandler(custom)
    try:
        logs.add_ids_to_text_logs()
        logs.add_ids_to_text_logs()  # idempotent: wrapped once
        assert isinstance(plain.formatter, logs.IdsFormatter)
        assert type(plain.formatter.inner) is logging.Formatter
        assert type(custom.formatter) is JsonFormatter
    finally:
        logs.uninstall()
        root.removeHandler(plain)
        root.removeHandler(custom)
    assert type(plain.formatter) is logging.Formatter  # put back


async def test_the_record_factory_is_undone_when_the_last_body_stops(make_body: Any) -> None:
    before = logging.getLogRecordFactory()
    first = make_body(greeter_plugin, tracing_plugin)
    second = make_body(greeter_plugin, tracing_plugin)
    await first.start()
    await second.start()
    ours = logging.getLogRecordFactory()
    assert ours is not before
    await first.stop()
    assert logging.getLogRecordFactory() is ours  # the second body still runs
    await second.stop()
    assert logging.getLogRecordFactory() is before
