"""The checked spec as typed objects, and how its policies map to the body's
options (``settings``): resilience to ``breaker_config``, durable verbs to
``durable``, the security identity to the ``nats_*`` options."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from cbs.spec.loader import load_file, load_text

__all__ = ["BodySpec", "CellSpec", "Autoscale", "Balancing", "Health", "parse", "read"]

#: ``security`` keys and the nats options they set.
SECURITY_OPTIONS = {
    "creds": "nats_creds",
    "nkey": "nats_nkey",
    "context": "nats_context",
    "user": "nats_user",
}


@attrs.frozen
class Health:
    verb: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    timeout: float = 2.0


@attrs.frozen
class CellSpec:
    """One entry of ``cells``."""

    id: str
    factory: str | None = None
    version: str | None = None
    #: Fixed replicas, or the autoscaling range.
    min_replicas: int = 1
    max_replicas: int = 1
    health: Health | None = None
    command: tuple[str, ...] = ()

    @property
    def sidecar(self) -> bool:
        return bool(self.command)

    @property
    def fixed_replicas(self) -> bool:
        return self.min_replicas == self.max_replicas

    def source(self) -> tuple[str | None, str | None, tuple[str, ...]]:
        """What makes the running instance: a change means an upgrade."""
        return (self.factory, self.version, self.command)


@attrs.frozen
class Autoscale:
    lag: int | None = None
    in_flight: float | None = None
    p95_ms: float | None = None
    interval: float = 5.0
    scale_up_window: float = 0.0
    scale_down_window: float = 300.0
    cooldown: float = 30.0


@attrs.frozen
class Balancing:
    step_out: float | None = None
    #: ``p2c``: callers choose the instance (the option ``balancing``); ``queue``: the group.
    strategy: str = "queue"
    step_in: float | None = None
    max_out: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.step_out is not None

    @property
    def step_in_level(self) -> float:
        if self.step_in is not None:
            return self.step_in
        return (self.step_out or 0.0) / 2


@attrs.frozen
class BodySpec:
    """A checked ``body.yaml``."""

    body_id: str
    cells: Mapping[str, CellSpec]
    #: Every body option the spec sets (settings plus the mapped policies).
    settings: Mapping[str, Any]
    autoscale: Mapping[str, Autoscale]
    balancing: Balancing = Balancing()
    data: Mapping[str, Any] = attrs.field(factory=dict, eq=False)


def _cell(cell_id: str, data: Mapping[str, Any]) -> CellSpec:
    replicas = data.get("replicas", 1)
    low, high = (
        (replicas, replicas) if isinstance(replicas, int) else (replicas["min"], replicas["max"])
    )
    health = data.get("health")
    return CellSpec(
        id=cell_id,
        factory=data.get("factory"),
        version=data.get("version"),
        min_replicas=low,
        max_replicas=high,
        health=None
        if health is None
        else Health(health["verb"], health.get("payload", {}), float(health.get("timeout", 2.0))),
        command=tuple(data.get("command") or ()),
    )


def _settings(data: Mapping[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = dict(data.get("settings") or {})
    for key, value in (data.get("security") or {}).items():
        settings[SECURITY_OPTIONS[key]] = value
    breaker: dict[str, Any] = {}
    durable: list[str] = []
    for service, policy in sorted((data.get("services") or {}).items()):
        if policy.get("resilience"):
            breaker[service] = dict(policy["resilience"])
        for verb, verb_policy in sorted((policy.get("verbs") or {}).items()):
            if verb_policy.get("resilience"):
                breaker[f"{service}.{verb}"] = dict(verb_policy["resilience"])
            if verb_policy.get("durable"):
                durable.append(f"{service}.{verb}")
    strategy = (data.get("balancing") or {}).get("strategy")
    if strategy is not None:
        settings["balancing"] = strategy
    if breaker:
        settings["breaker_config"] = json.dumps(breaker, sort_keys=True)
    if durable:
        settings["durable"] = ",".join(durable)
    return settings


def _check(spec: BodySpec, name: str) -> None:
    from cbs.spec.loader import SpecError

    for cell in spec.cells.values():
        if cell.min_replicas > cell.max_replicas:
            raise SpecError(
                f"{name}: cells.{cell.id}.replicas: min {cell.min_replicas}"
                f" is above max {cell.max_replicas}"
            )
        if cell.command and cell.factory:
            raise SpecError(f"{name}: cells.{cell.id}: a sidecar (command) has no factory")


def parse(
    data: Mapping[str, Any], *, default_id: str = "body", name: str = "body.yaml"
) -> BodySpec:
    """A :class:`BodySpec` from checked spec data."""
    services = data.get("services") or {}
    spec = BodySpec(
        body_id=(data.get("body") or {}).get("id") or default_id,
        cells={cid: _cell(cid, c) for cid, c in (data.get("cells") or {}).items()},
        settings=_settings(data),
        autoscale={
            service: Autoscale(**policy["autoscale"])
            for service, policy in services.items()
            if policy.get("autoscale")
        },
        balancing=Balancing(**(data.get("balancing") or {})),
        data=data,
    )
    _check(spec, name)
    return spec


def _default_id(path: Path) -> str:
    stem = "".join(ch if ch.isalnum() else "_" for ch in path.stem.lower()).strip("_")
    return stem if stem[:1].isalpha() else "body"


def read(path: str | Path) -> BodySpec:
    """Read, check and parse a spec file (``SpecError`` if bad)."""
    path = Path(path)
    return parse(load_file(path), default_id=_default_id(path), name=str(path))


def read_text(text: str, name: str = "body.yaml") -> BodySpec:
    return parse(load_text(text, name), default_id=_default_id(Path(name)), name=name)
