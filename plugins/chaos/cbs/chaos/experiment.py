"""Experiment files: Chaos Toolkit's format where it fits, checked up front.

Top level: ``version``, ``title``, ``description``, ``tags``,
``contributions``, ``configuration`` (values for ``${name}`` in arguments,
inline or ``{type: env, key: NAME}``), ``steady-state-hypothesis`` (``title``,
``probes``, each with a ``tolerance``), ``method`` (actions and probes, in
order), ``rollbacks`` (actions), and ``extensions``, where the entry named
``cbs`` says what the run starts: a ``nats`` server (or the ``url`` of one on
127.0.0.1), ``processes``, and the ``timeout`` of the whole run.

Every activity is ``{type: probe|action, name, provider: {type: python,
module: cbs.chaos.probes|cbs.chaos.actions, func, arguments}, pauses:
{before, after}}`` or ``{ref: NAME}``. A bad file is one ``ConfigError`` line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from cbs.chaos.rules import parse_rules
from cbs.contracts import CbsError, parse_subject
from cbs.kernel import ConfigError

__all__ = ["Activity", "Process", "Experiment", "load_experiment", "PROBES", "ACTIONS"]

PROBE_MODULE = "cbs.chaos.probes"
ACTION_MODULE = "cbs.chaos.actions"
PROBES = ("success_ratio", "latency_p99")
ACTIONS = (
    "inject",
    "clear",
    "kill_process",
    "pause_process",
    "resume_process",
    "start_process",
    "restart_nats",
)
_TOP = {
    "version",
    "title",
    "description",
    "tags",
    "contributions",
    "configuration",
    "steady-state-hypothesis",
    "method",
    "rollbacks",
    "extensions",
}
_ACTIVITY = {"type", "name", "provider", "tolerance", "pauses", "background"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIGNALS = ("KILL", "TERM", "INT")
_LOOPBACK = re.compile(r"^nats://(127\.0\.0\.1|localhost):[0-9]{1,5}$")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"bad experiment: {where}: {message}")


def _number(value: Any, where: str, key: str, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise _fail(where, f"{key} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


@attrs.frozen
class Activity:
    """One probe or action, checked; ``arguments`` still hold ``${name}``."""

    type: str
    name: str
    func: str
    arguments: Mapping[str, Any]
    tolerance: Any = None
    before: float = 0.0
    after: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "name": self.name, "func": self.func}
        if self.type == "probe" and self.tolerance is not None:
            data["tolerance"] = self.tolerance
        return data


@attrs.frozen
class Process:
    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    ready_timeout: float = 30.0


@attrs.frozen
class Experiment:
    title: str
    description: str
    hypothesis_title: str
    hypothesis: tuple[Activity, ...]
    method: tuple[Activity, ...]
    rollbacks: tuple[Activity, ...]
    configuration: Mapping[str, str]
    nats_url: str | None
    processes: tuple[Process, ...]
    timeout: float

    def substitute(self, value: Any, values: Mapping[str, str]) -> Any:
        """``${name}`` replaced in every text of ``value`` (``ConfigError``
        for a name that is not configured)."""
        if isinstance(value, str):

            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in values:
                    raise ConfigError(f"bad experiment: ${{{name}}} is not configured")
                return values[name]

            return _VAR.sub(one, value)
        if isinstance(value, list | tuple):
            return [self.substitute(v, values) for v in value]
        if isinstance(value, Mapping):
            return {k: self.substitute(v, values) for k, v in value.items()}
        return value


def check_tolerance(tolerance: Any, where: str) -> Any:
    if isinstance(tolerance, bool | int | float | str):
        return tolerance
    if isinstance(tolerance, Mapping) and tolerance.get("type") == "range":
        bounds = tolerance.get("range")
    else:
        bounds = tolerance
    if (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        and bounds[0] <= bounds[1]
    ):
        return tolerance
    raise _fail(
        where, "tolerance must be a value, [low, high] or {type: range, range: [low, high]}"
    )


def tolerance_met(tolerance: Any, value: Any) -> bool:
    """Chaos Toolkit's rule: equal to a scalar, or within ``[low, high]``."""
    if isinstance(tolerance, Mapping):
        tolerance = tolerance["range"]
    if isinstance(tolerance, list):
        low, high = tolerance
        return isinstance(value, int | float) and low <= value <= high
    return bool(value == tolerance)


def _check_probe_args(args: Mapping[str, Any], where: str) -> None:
    known = {"target", "payload", "schema", "rate", "window", "timeout"}
    unknown = set(args) - known
    if unknown:
        raise _fail(where, f"unknown argument {sorted(unknown)[0]!r} ({', '.join(sorted(known))})")
    target = args.get("target")
    if not isinstance(target, str):
        raise _fail(where, "target must be SERVICE.VERB")
    if "${" not in target:
        try:
            parse_subject(f"cbs.{target}")
        except CbsError:
            raise _fail(where, f"target must be SERVICE.VERB, not {target!r}") from None
    if not isinstance(args.get("payload", {}), Mapping):
        raise _fail(where, "payload must be a mapping")
    if "schema" in args and not isinstance(args["schema"], str):
        raise _fail(where, "schema must be a text")
    _number(args.get("rate", 10), where, "rate", 0.1, 1000)
    _number(args.get("window", 2), where, "window", 0.05, 600)
    _number(args.get("timeout", 1.0), where, "timeout", 0.01, 60)


def _check_action_args(func: str, args: Mapping[str, Any], where: str) -> None:
    allowed: dict[str, set[str]] = {
        "inject": {"rules", "replace", "instance", "expect"},
        "clear": {"names", "instance", "expect"},
        "kill_process": {"process", "signal"},
        "pause_process": {"process"},
        "resume_process": {"process"},
        "start_process": {"process"},
        "restart_nats": {"down"},
    }
    unknown = set(args) - allowed[func]
    if unknown:
        raise _fail(where, f"{func} takes no argument {sorted(unknown)[0]!r}")
    if func == "inject":
        if "rules" not in args:
            raise _fail(where, "inject needs rules")
        if not any("${" in json.dumps(r) for r in args["rules"] or []):
            try:
                parse_rules(args["rules"])
            except ConfigError as exc:
                raise _fail(where, str(exc)) from None
    if func == "clear" and not isinstance(args.get("names", []), list):
        raise _fail(where, "names must be a list of rule names")
    if "expect" in args:
        _number(args["expect"], where, "expect", 0, 10_000)
    if func.endswith("_process") and not isinstance(args.get("process"), str):
        raise _fail(where, f"{func} needs process: the name of a declared process")
    if func == "kill_process" and args.get("signal", "KILL") not in _SIGNALS:
        raise _fail(where, f"signal must be one of {', '.join(_SIGNALS)}")
    if func == "restart_nats":
        _number(args.get("down", 0), where, "down", 0, 300)


def _activity(raw: Any, where: str, declared: dict[str, Activity], *, hypothesis: bool) -> Activity:
    if isinstance(raw, Mapping) and set(raw) == {"ref"}:
        ref = raw["ref"]
        if ref not in declared:
            raise _fail(where, f"ref {ref!r} names no activity declared before it")
        return declared[ref]
    if not isinstance(raw, Mapping):
        raise _fail(where, "expected an activity (a mapping)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, "an activity needs a name")
    where = f"{where} {name!r}"
    unknown = set(raw) - _ACTIVITY
    if unknown:
        raise _fail(where, f"unknown key {sorted(unknown)[0]!r} ({', '.join(sorted(_ACTIVITY))})")
    if raw.get("background"):
        raise _fail(where, "background activities are not supported")
    kind = raw.get("type")
    if kind not in ("probe", "action") or (hypothesis and kind != "probe"):
        expected = "probe" if hypothesis else "probe or action"
        raise _fail(where, f"type must be {expected}")
    provider = raw.get("provider")
    if not isinstance(provider, Mapping) or provider.get("type", "python") != "python":
        raise _fail(where, "provider must be {type: python, module, func, arguments}")
    module = PROBE_MODULE if kind == "probe" else ACTION_MODULE
    funcs = PROBES if kind == "probe" else ACTIONS
    if provider.get("module", module) != module:
        raise _fail(where, f"provider module must be {module}")
    func = provider.get("func")
    if not isinstance(func, str) or func not in funcs:
        raise _fail(where, f"provider func must be one of {', '.join(funcs)}")
    args = provider.get("arguments") or {}
    if not isinstance(args, Mapping):
        raise _fail(where, "arguments must be a mapping")
    if kind == "probe":
        _check_probe_args(args, where)
    else:
        _check_action_args(func, args, where)
    tolerance = None
    if hypothesis:
        if "tolerance" not in raw:
            raise _fail(where, "a probe of the hypothesis needs a tolerance")
        tolerance = check_tolerance(raw["tolerance"], where)
    pauses = raw.get("pauses") or {}
    if not isinstance(pauses, Mapping) or set(pauses) - {"before", "after"}:
        raise _fail(where, "pauses must be {before: seconds, after: seconds}")
    activity = Activity(
        type=kind,
        name=name,
        func=func,
        arguments=dict(args),
        tolerance=tolerance,
        before=_number(pauses.get("before", 0), where, "pauses.before", 0, 300),
        after=_number(pauses.get("after", 0), where, "pauses.after", 0, 300),
    )
    declared.setdefault(name, activity)
    return activity


def _configuration(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail("configuration", "expected a mapping")
    values: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and value.get("type") == "env":
            env = value.get("key")
            if not isinstance(env, str):
                raise _fail(f"configuration {key!r}", "an env value needs key: NAME")
            if env not in os.environ and "default" not in value:
                raise _fail(f"configuration {key!r}", f"environment variable {env} is not set")
            values[key] = str(os.environ.get(env, value.get("default")))
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            values[key] = str(value)
        else:
            raise _fail(f"configuration {key!r}", "expected text, a number or {type: env, key}")
    return values


def _extension(raw: Any) -> tuple[str | None, tuple[Process, ...], float]:
    entries = [e for e in raw or [] if isinstance(e, Mapping) and e.get("name") == "cbs"]
    if raw is not None and not isinstance(raw, list):
        raise _fail("extensions", "expected a list of {name: ..., ...}")
    if not entries:
        return None, (), 120.0
    ext = entries[0]
    where = "extensions cbs"
    unknown = set(ext) - {"name", "nats", "processes", "timeout"}
    if unknown:
        raise _fail(where, f"unknown key {sorted(unknown)[0]!r} (nats, processes, timeout)")
    nats = ext.get("nats", "start")
    url: str | None = None
    if isinstance(nats, Mapping) and "url" in nats:
        url = nats["url"]
        if not isinstance(url, str) or _LOOPBACK.fullmatch(url) is None:
            raise _fail(where, f"nats url must be nats://127.0.0.1:PORT, not {url!r}")
    elif nats != "start" and nats != {"start": True}:
        raise _fail(where, "nats must be 'start' or {url: nats://127.0.0.1:PORT}")
    timeout = _number(ext.get("timeout", 120), where, "timeout", 1, 3600)
    processes: list[Process] = []
    for i, proc in enumerate(ext.get("processes") or []):
        pwhere = f"{where} process #{i + 1}"
        if not isinstance(proc, Mapping) or set(proc) - {"name", "command", "env", "ready_timeout"}:
            raise _fail(pwhere, "expected {name, command, env, ready_timeout}")
        name, command = proc.get("name"), proc.get("command")
        if not isinstance(name, str) or not name or name in {p.name for p in processes}:
            raise _fail(pwhere, "needs a unique name")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise _fail(pwhere, "command must be a list of texts, e.g. [cbs, run, --cells, greet]")
        env = proc.get("env") or {}
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise _fail(pwhere, "env must map names to texts")
        ready = _number(proc.get("ready_timeout", 30), pwhere, "ready_timeout", 0.1, 600)
        processes.append(Process(name, tuple(command), dict(env), ready))
    return url, tuple(processes), timeout


def parse_experiment(data: Any) -> Experiment:
    if not isinstance(data, Mapping):
        raise ConfigError("bad experiment: expected a mapping at the top")
    unknown = set(data) - _TOP
    if unknown:
        raise _fail("top level", f"unknown key {sorted(unknown)[0]!r} ({', '.join(sorted(_TOP))})")
    title = data.get("title")
    if not isinstance(title, str) or not title:
        raise _fail("top level", "an experiment needs a title")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail("top level", "description must be a text")
    declared: dict[str, Activity] = {}
    ssh = data.get("steady-state-hypothesis") or {}
    if not isinstance(ssh, Mapping) or not isinstance(ssh.get("probes", []), list):
        raise _fail("steady-state-hypothesis", "expected {title, probes: [...]}")
    hypothesis = tuple(
        _activity(p, f"steady-state-hypothesis probe #{i + 1}", declared, hypothesis=True)
        for i, p in enumerate(ssh.get("probes") or [])
    )
    method_raw = data.get("method")
    if not isinstance(method_raw, list) or not method_raw:
        raise _fail("method", "needs at least one activity")
    method = tuple(
        _activity(a, f"method #{i + 1}", declared, hypothesis=False)
        for i, a in enumerate(method_raw)
    )
    rollbacks_raw = data.get("rollbacks") or []
    if not isinstance(rollbacks_raw, list):
        raise _fail("rollbacks", "expected a list of actions")
    rollbacks = tuple(
        _activity(a, f"rollbacks #{i + 1}", declared, hypothesis=False)
        for i, a in enumerate(rollbacks_raw)
    )
    if any(a.type != "action" for a in rollbacks):
        raise _fail("rollbacks", "only actions may roll back")
    url, processes, timeout = _extension(data.get("extensions"))
    names = {p.name for p in processes}
    for activity in (*method, *rollbacks):
        wanted = activity.arguments.get("process")
        if activity.func.endswith("_process") and wanted not in names:
            raise _fail(activity.name, f"process {wanted!r} is not declared in extensions cbs")
        if activity.func == "restart_nats" and url is not None:
            raise _fail(activity.name, "restart_nats needs a nats-server the experiment starts")
    return Experiment(
        title=title,
        description=description,
        hypothesis_title=str(ssh.get("title", "")),
        hypothesis=hypothesis,
        method=method,
        rollbacks=rollbacks,
        configuration=_configuration(data.get("configuration")),
        nats_url=url,
        processes=processes,
        timeout=timeout,
    )


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and check an experiment file (YAML, or JSON as YAML reads it)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read experiment {path} ({type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"bad experiment: {path} is not valid YAML ({first})") from None
    return parse_experiment(data)
