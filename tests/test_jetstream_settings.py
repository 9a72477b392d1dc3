"""cbs-jetstream without a server: names, durations, times, durable verbs,
backoff and option validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream.settings import (
    Settings,
    backoff_delay,
    consumer_name,
    dlq_stream,
    dlq_subject,
    durable_subject,
    durable_verbs,
    parse_durable,
    parse_duration,
    parse_time,
    stream_name,
)
from cbs.kernel import Body, Cell, ConfigError


def test_the_subject_space_keeps_request_reply_apart() -> None:
    assert durable_subject("printer", "write") == "cbsd.printer.write"
    assert dlq_subject("printer", "write") == "cbsdlq.printer.write"
    assert stream_name("printer") == "CBS_printer"
    assert dlq_stream("printer") == "CBS_DLQ_printer"
    assert consumer_name("printer", "write") == "CBS_printer_write"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("2m", 120),
        ("1.5h", 5400),
        ("7d", 604800),
        ("1w", 604800),
        ("45", 45),
        (" 10 m ", 600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1s", "10 minutes", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_times_are_iso_8601_or_a_duration_ago() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert parse_time("10m", now=now) == now - timedelta(minutes=10)
    assert parse_time("2026-11-27T09:00:00Z") == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert parse_time("2026-11-27T11:00:00+02:00") == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    local = parse_time("2026-11-27T09:00:00")
    assert local == datetime(2026, 11, 27, 9, 0).astimezone().astimezone(UTC)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_durable_verbs_by_flag_and_by_configuration() -> None:
    cell = Cell("printer", category="io", version="1.0.0", purpose="p")
    handler: Any = lambda payload: {}  # noqa: E731
    cell.add_verb("write", handler, schema="demo/v1/Greeting")
    cell.add_verb("flush", handler, schema="demo/v1/Greeting", durable=True)
    cell.add_verb("status", handler, schema="demo/v1/Greeting")
    assert [e.verb for e in durable_verbs(cell, frozenset())] == ["flush"]
    configured = parse_durable("printer.write, greeter.say_hello")
    assert configured == {("printer", "write"), ("greeter", "say_hello")}
    assert [e.verb for e in durable_verbs(cell, configured)] == ["write", "flush"]
    every = parse_durable("printer.*")
    assert [e.verb for e in durable_verbs(cell, every)] == ["write", "flush", "status"]
    assert parse_durable(None) == frozenset() == parse_durable("")


@pytest.mark.parametrize("spec", ["printer", "Printer.write", "printer.Write", "printer.*.x"])
def test_bad_durable_lists_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="bad value for durable"):
        parse_durable(spec)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert Settings(backoff=0.05, backoff_max=0.3).delay(3) == pytest.approx(0.2)


def test_options_resolve_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBS_DURABLE", "printer.write")
    monkeypatch.setenv("CBS_JETSTREAM_MAX_AGE", "1d")
    body = Body({"jetstream_backoff": "250ms"}, plugins=[jetstream_plugin], autoload=False)
    settings = Settings.from_config(body.config)
    assert settings.durable == {("printer", "write")}
    assert settings.max_age == 86400
    assert settings.backoff == 0.25
    assert settings.duplicate_window == 120
    assert settings.replicas is None  # decided at connect: 3 on a cluster, else 1
    assert settings.concurrency is None


def test_a_duplicate_window_longer_than_max_age_is_refused() -> None:
    body = Body(
        {"jetstream_max_age": "1m", "jetstream_duplicate_window": "2m"},
        plugins=[jetstream_plugin],
        autoload=False,
    )
    with pytest.raises(ConfigError, match="is longer than --jetstream-max-age"):
        Settings.from_config(body.config)
