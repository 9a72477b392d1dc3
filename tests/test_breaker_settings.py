"""The ``breaker_config`` option: formats, precedence and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cbs.breaker import plugin
from cbs.breaker.settings import Policy, load_settings
from cbs.kernel import Body, ConfigError

MakeBody = Callable[..., Body]

TOML = """
[default]
failure_threshold = 3
cooldown = 2

[greeter]
retries = 1

[greeter.say_hello]
idempotent = true
attempt_timeout = 0.5

["printer.write"]
breaker = false
"""


def test_no_configuration_gives_the_defaults() -> None:
    for empty in (None, "", {}, "{}"):
        assert load_settings(empty).policy("any", "verb") == Policy()


def test_toml_tables_apply_from_default_to_verb(tmp_path: Path) -> None:
    path = tmp_path / "breaker.toml"
    path.write_text(TOML)
    settings = load_settings(str(path))
    hello = settings.policy("greeter", "say_hello")
    assert (hello.failure_threshold, hello.cooldown, hello.retries) == (3, 2.0, 1)
    assert (hello.idempotent, hello.attempt_timeout) == (True, 0.5)
    assert isinstance(hello.cooldown, float)
    other = settings.policy("greeter", "other")
    assert (other.retries, other.idempotent) == (1, None)
    assert settings.policy("printer", "write").breaker is False
    assert settings.policy("prompt_name", "read") == Policy(failure_threshold=3, cooldown=2.0)


def test_json_text_file_and_mapping_are_the_same(tmp_path: Path) -> None:
    data = {"default": {"window": 10}, "greeter.say_hello": {"probes": 2}}
    path = tmp_path / "breaker.json"
    path.write_text(json.dumps(data))
    for source in (data, json.dumps(data), str(path)):
        policy = load_settings(source).policy("greeter", "say_hello")
        assert (policy.window, policy.probes) == (10, 2)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"default": {"failure_rate": 1.5}}, '["default"] failure_rate must be a number from 0'),
        ({"default": {"failur_rate": 0.5}}, "unknown setting 'failur_rate' (known: breaker,"),
        ({"default": {"window": True}}, "window must be an integer from 1 to 10000, not True"),
        ({"default": {"retries": -1}}, "retries must be an integer from 0 to 100, not -1"),
        ({"default": {"cooldown": 0}}, "cooldown must be seconds, > 0, not 0"),
        ({"default": {"idempotent": "yes"}}, "idempotent must be true or false, not 'yes'"),
        ({"default": {"max_concurrent": 1.5}}, "max_concurrent must be an integer >= 0"),
        ({"default": {"deadline": float("nan")}}, "deadline must be seconds, >= 0 (0: off)"),
        ({"Greeter": {}}, "[\"Greeter\"] is neither 'default', a service nor"),
        ({"a.b.c": {}}, '["a.b.c"] is neither'),
        ({"greeter": 3}, '["greeter"] expected a table of settings'),
        ({"greeter.say_hello": []}, '["greeter.say_hello"] expected a table of settings'),
        ({"greeter": {"Say": {}}}, '["greeter.Say"] is not a verb name'),
        ({"default": {"window": 5, "min_calls": 6}}, "min_calls (6) exceeds window (5)"),
        ({"greeter": {"min_calls": 30}}, '["greeter"] min_calls (30) exceeds window (20)'),
        ({"default": {"backoff": 2.0}}, "backoff_max (1.0) is below backoff"),
        (
            {"default": {"failure_threshold": 0, "failure_rate": 0}},
            "both 0: set breaker = false instead",
        ),
        (
            {"greeter.say_hello": {}, "greeter": {"say_hello": {}}},
            '["greeter.say_hello"] given twice',
        ),
        ("{not json", "not a valid JSON object"),
        ('{"default": 1}', '["default"] expected a table of settings'),
        ("/no/such/breaker.toml", "cannot read /no/such/breaker.toml (FileNotFoundError"),
        (42, "expected a file name, a JSON object or a mapping, not 42"),
    ],
)
def test_bad_values_are_one_line_config_errors(config: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert text.startswith("bad breaker_config: ")
    assert message in text
    assert "\n" not in text


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[default]\nwindow = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML \(.*line 2"):
        load_settings(str(path))


async def test_checked_when_the_body_starts(make_body: MakeBody) -> None:
    body = make_body(plugin, config={"breaker_config": '{"default": {"window": 0}}'})
    with pytest.raises(ConfigError, match="window must be"):
        await body.start()


CBS = [sys.executable, "-m", "cbs.kernel.cli"]
ENV = {**os.environ, "CBS_PLUGINS": "greeter,breaker", "CBS_TRANSPORT": "local"}


def test_cli_prints_one_line_and_exits_2() -> None:
    result = subprocess.run(
        [*CBS, "call", "greeter.say_hello", '{"name": "Ada"}'],
        env={**ENV, "CBS_BREAKER_CONFIG": '{"greeter": {"probes": 0}}'},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        'cbs: error: bad breaker_config: ["greeter"] probes must be an integer >= 1, not 0'
    ]


def test_cli_takes_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "breaker.toml"
    path.write_text(TOML)
    result = subprocess.run(
        [*CBS, "call", "greeter.say_hello", '{"name": "Ada"}', "--breaker-config", str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"message": "Hello Ada!"}
