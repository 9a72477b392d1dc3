"""Reconciliation: what a spec changes on a running body, and doing it.

:meth:`Reconciler.plan` compares a spec with the body (what it serves, the
sources and versions it applied, the replicas it asked for, the options in
force) and returns the changes; :meth:`Reconciler.apply` checks everything
first (factories import, installed ids exist, versions match, options are
declared: a spec that fails changes nothing) and then carries the changes
out through the kernel's run-time lifecycle:

- ``add``: ``body.serve([id])`` for an installed cell not served yet, else
  ``body.add_cell(cell)`` (a factory's cell);
- ``remove``: ``body.remove_cell(id, drain=True)``: in-flight requests finish;
- ``upgrade``: the new version's health request runs on it before it serves;
  then ``body.replace_cell(cell)``: the new version serves before the old one
  drains (a rolling update with maxUnavailable 0). A failed health request or
  a failed start is rolled back: the old version keeps serving, and the
  report says why;
- ``scale``: ``Scaler.scale(service, n)`` when a pool provides one, else a
  log line that replicas need cbs-pool;
- ``sidecar``: ``Scaler.scale_sidecar(name, command, n)``, else the command
  runs as child processes of this body (:mod:`cbs.spec.sidecars`);
- ``restart``: options differ from those in force; options are fixed at
  start, so these are reported, never applied live.

Applying the same spec twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from cbs.contracts import Cell
from cbs.kernel import Body
from cbs.spec.capabilities import Scaler
from cbs.spec.loader import SpecError
from cbs.spec.model import BodySpec, CellSpec
from cbs.spec.sidecars import LocalSidecars

__all__ = ["Change", "Report", "Reconciler", "load_factory"]

log = logging.getLogger("cbs.spec")

#: The order changes are carried out in: new cells first, removals last.
_ORDER = {"add": 0, "upgrade": 1, "sidecar": 2, "scale": 3, "remove": 4, "restart": 5}


@attrs.frozen
class Change:
    """One change: ``kind`` (add, remove, upgrade, scale, sidecar, restart),
    its ``target`` (a cell id, service or option) and a line of detail."""

    kind: str
    target: str
    detail: str

    def line(self) -> str:
        sign = {"add": "+", "remove": "-", "restart": "!"}.get(self.kind, "~")
        return f"{sign} {self.kind:<8} {self.target}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "detail": self.detail}


@attrs.define
class Report:
    """What one apply did: changes made, rolled back, and those needing a restart."""

    applied: list[Change] = attrs.Factory(list)
    rolled_back: list[str] = attrs.Factory(list)
    restart: list[Change] = attrs.Factory(list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.rolled_back

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": [c.to_dict() for c in self.applied],
            "rolled_back": list(self.rolled_back),
            "restart": [c.to_dict() for c in self.restart],
            "error": self.error,
        }


def load_factory(ref: str, where: str) -> Cell:
    """Call the factory ``module:function`` and return its cell."""
    module_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(
            f"{where}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise SpecError(f"{where}: {module_name} has no function {func_name}")
    try:
        cell = factory()
    except Exception as exc:
        raise SpecError(f"{where}: {ref}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(cell, Cell):
        raise SpecError(f"{where}: {ref}() returned {type(cell).__name__}, not a cell")
    return cell


class Reconciler:
    """Keeps one body in line with the specs it is given (one at a time)."""

    def __init__(self, body: Body, settings: Mapping[str, Any] | None = None) -> None:
        self.body = body
        #: The installed cells (entry points) as they were before any change,
        #: so that a removed cell can come back.
        self.catalog: dict[str, Cell] = {r.item.id: r.item for r in body.cells}
        #: The options the body was started with from a spec.
        self.settings: dict[str, Any] = dict(settings or {})
        self.applied: dict[str, CellSpec] = {}
        self.replicas: dict[str, int] = {}
        self.spec: BodySpec | None = None
        #: Called with each spec applied without a refusal (from the file or the bus).
        self.on_applied: Callable[[BodySpec], None] | None = None
        self._lock = asyncio.Lock()
        #: Sidecars run here when no Scaler is there (stopped by ``close()``).
        self.sidecars = LocalSidecars()
        self._warned: set[str] = set()

    # -- planning -------------------------------------------------------------------------

    def _served(self) -> dict[str, Cell]:
        return {c.id: c for c in self.body.served_cells}

    def service_of(self, cell: CellSpec) -> str:
        found = self._served().get(cell.id) or self.catalog.get(cell.id)
        return found.service if found is not None else cell.id

    def desired_replicas(self, cell: CellSpec) -> int:
        """Fixed replicas, or the current count kept within min and max."""
        current = self.replicas.get(self.service_of(cell), cell.min_replicas)
        return max(cell.min_replicas, min(cell.max_replicas, current))

    def plan(self, spec: BodySpec) -> list[Change]:
        """The changes ``spec`` makes, checked (``SpecError`` if it cannot be applied)."""
        changes = self._plan(spec)
        self.candidates(spec, changes)
        return changes

    def candidates(self, spec: BodySpec, changes: list[Change]) -> dict[str, Cell]:
        """The cells to add or upgrade to, built and checked."""
        built = {
            c.target: self._candidate(spec.cells[c.target])
            for c in changes
            if c.kind in ("add", "upgrade")
        }
        self._check_durable(spec, built)
        return built

    def _check_durable(self, spec: BodySpec, built: Mapping[str, Cell]) -> None:
        """A durable verb is one a cell of the spec serves (else its inbox
        would fill with nobody to take from it)."""
        if any(cell.sidecar for cell in spec.cells.values()):
            return  # a sidecar may serve it: its verbs are not known here
        running = self._served()
        served: set[tuple[str, str]] = set()
        for cell_id in spec.cells:
            cell = built.get(cell_id) or running.get(cell_id)
            if cell is not None:
                served.update((cell.service, e.verb) for e in cell.endpoints)
        for service, policy in sorted((spec.data.get("services") or {}).items()):
            for verb, verb_policy in sorted((policy.get("verbs") or {}).items()):
                if verb_policy.get("durable") and (service, verb) not in served:
                    known = ", ".join(f"{s}.{v}" for s, v in sorted(served)) or "none"
                    raise SpecError(
                        f"services.{service}.verbs.{verb}.durable: no cell of this spec serves"
                        f" {service}.{verb} (served: {known})"
                    )

    def _plan(self, spec: BodySpec) -> list[Change]:
        served = self._served()
        changes: list[Change] = []
        for cell in spec.cells.values():
            if cell.sidecar:
                before = self.applied.get(cell.id)
                if (
                    before is None
                    or before.source() != cell.source()
                    or (before.min_replicas != cell.min_replicas)
                ):
                    changes.append(
                        Change("sidecar", cell.id, f"{' '.join(cell.command)} x{cell.min_replicas}")
                    )
                continue
            running = served.get(cell.id)
            if running is None:
                source = cell.factory or "installed"
                changes.append(Change("add", cell.id, f"{source} {cell.version or ''}".strip()))
            else:
                before = self.applied.get(cell.id)
                old_source = before.factory if before else None
                if old_source != cell.factory or (
                    cell.version is not None and cell.version != running.version
                ):
                    new = cell.version or cell.factory or "installed"
                    changes.append(Change("upgrade", cell.id, f"{running.version} -> {new}"))
            service = self.service_of(cell)
            n = self.desired_replicas(cell)
            if n != self.replicas.get(service, 1):
                changes.append(Change("scale", service, f"{self.replicas.get(service, 1)} -> {n}"))
        for cell_id in served:
            if cell_id not in spec.cells:
                changes.append(Change("remove", cell_id, "drain, then stop"))
        for sidecar, before in self.applied.items():
            if before.sidecar and sidecar not in spec.cells:
                changes.append(Change("sidecar", sidecar, "x0"))
        changes.extend(self._setting_changes(spec))
        return sorted(changes, key=lambda c: _ORDER[c.kind])

    def _setting_changes(self, spec: BodySpec) -> list[Change]:
        declared = self.body.options.as_dict()
        changes = []
        for name in sorted(set(spec.settings) | set(self.settings)):
            if name in spec.settings and name not in declared:
                raise SpecError(f"settings.{name}: no loaded plugin declares this option")
            want = spec.settings.get(name)
            option = declared.get(name)
            if option is not None and want is not None:
                want = option.convert(want if isinstance(want, str) else str(want), name)
            have = self.body.config.get(name)
            if want != have and (want is not None or name in self.settings):
                changes.append(
                    Change(
                        "restart",
                        name,
                        f"{_show(name, have)} -> {_show(name, want)}"
                        " (fixed at start: needs a restart)",
                    )
                )
        return changes

    # -- applying -------------------------------------------------------------------------

    def _candidate(self, cell: CellSpec) -> Cell:
        where = f"cells.{cell.id}"
        if cell.factory:
            found = load_factory(cell.factory, where)
        else:
            catalog = self.catalog.get(cell.id)
            if catalog is None:
                known = ", ".join(sorted(self.catalog)) or "none"
                raise SpecError(f"{where}: no installed cell {cell.id!r} (installed: {known})")
            found = catalog
        if found.id != cell.id:
            raise SpecError(f"{where}: the factory made cell {found.id!r}, not {cell.id!r}")
        if cell.version is not None and found.version != cell.version:
            raise SpecError(f"{where}: version {cell.version} wanted, the cell is {found.version}")
        if cell.health is not None and cell.health.verb not in {e.verb for e in found.endpoints}:
            raise SpecError(f"{where}.health.verb: the cell has no verb {cell.health.verb!r}")
        return found

    async def apply(self, spec: BodySpec) -> Report:
        """Converge the body on ``spec``; a spec that fails its checks
        changes nothing (the report's ``error`` says why)."""
        async with self._lock:
            report = Report()
            try:
                changes = self._plan(spec)
                candidates = self.candidates(spec, changes)
            except SpecError as exc:
                report.error = str(exc)
                log.error("spec refused, nothing changed: %s", exc)
                return report
            for change in changes:
                if change.kind == "restart":
                    report.restart.append(change)
                    log.warning("spec: %s", change.line())
                    continue
                try:
                    done = await self._carry_out(
                        change, spec, candidates.get(change.target), report
                    )
                except Exception as exc:  # e.g. subjects another served cell has
                    line = f"{change.target}: {change.kind} failed: {type(exc).__name__}: {exc}"
                    report.rolled_back.append(line)
                    log.error("spec: %s; the body keeps what it had", line)
                    continue
                if done:
                    report.applied.append(change)
                    log.info("spec: %s", change.line())
            self.spec = spec
            if self.on_applied is not None:
                self.on_applied(spec)
            return report

    async def _carry_out(
        self, change: Change, spec: BodySpec, candidate: Cell | None, report: Report
    ) -> bool:
        body = self.body
        if change.kind == "add":
            assert candidate is not None
            cell = spec.cells[change.target]
            if change.target in body.cells and body.cells.cell(change.target) is candidate:
                await body.serve([change.target])
            elif change.target in body.cells:
                await body.replace_cell(candidate)
                await body.serve([change.target])
            else:
                await body.add_cell(candidate)
            self.applied[change.target] = cell
            return True
        if change.kind == "remove":
            await body.remove_cell(change.target, drain=True)
            self.applied.pop(change.target, None)
            return True
        if change.kind == "upgrade":
            assert candidate is not None
            return await self._upgrade(spec.cells[change.target], candidate, report)
        if change.kind == "scale":
            cell = next(c for c in spec.cells.values() if self.service_of(c) == change.target)
            return await self.scale(change.target, self.desired_replicas(cell))
        if change.kind == "sidecar":
            return await self._sidecar(change.target, spec.cells.get(change.target))
        return False

    async def _upgrade(self, cell: CellSpec, candidate: Cell, report: Report) -> bool:
        problem = await self._health(cell, candidate)
        if problem is None:
            try:
                await self.body.replace_cell(candidate)
            except Exception as exc:  # the registry is restored: the old one serves
                problem = f"failed to start: {type(exc).__name__}: {exc}"
        if problem is not None:
            line = f"{cell.id} {candidate.version}: {problem}; the old version keeps serving"
            report.rolled_back.append(line)
            log.error("spec: rolled back %s", line)
            return False
        self.applied[cell.id] = cell
        return True

    async def _health(self, cell: CellSpec, candidate: Cell) -> str | None:
        """Run the health request on the new version before it serves:
        ``None`` if it answered, else why not."""
        if cell.health is None:
            return None
        endpoint = next(e for e in candidate.endpoints if e.verb == cell.health.verb)
        try:
            await candidate.start()
            reply = await asyncio.wait_for(
                endpoint.handler(dict(cell.health.payload)), cell.health.timeout
            )
        except TimeoutError:
            return f"health check {cell.health.verb} timed out after {cell.health.timeout:g} s"
        except Exception as exc:
            return f"health check {cell.health.verb} failed: {type(exc).__name__}: {exc}"
        if not isinstance(reply, Mapping):
            return f"health check {cell.health.verb} returned {type(reply).__name__}"
        return None

    async def scale(self, service: str, n: int) -> bool:
        """Ask the pool for ``n`` instances of ``service`` (the autoscaler
        calls this too); without a :class:`Scaler`, log that once."""
        scaler = self.body.capabilities.get(Scaler)
        if scaler is None:
            if n > 1 and service not in self._warned:
                self._warned.add(service)
                log.warning(
                    "spec: %s wants %d replicas; replicas need a Scaler (pip install cbs-pool):"
                    " serving one instance in this body",
                    service,
                    n,
                )
            self.replicas[service] = n
            return n <= 1
        await scaler.scale(service, n)
        self.replicas[service] = n
        return True

    async def _sidecar(self, name: str, cell: CellSpec | None) -> bool:
        """Through the Scaler when there is one, else as child processes of
        this body (:mod:`cbs.spec.sidecars`)."""
        scaler = self.body.capabilities.get(Scaler)
        command = cell.command if cell is not None else ()
        n = cell.min_replicas if cell is not None else 0
        if scaler is not None:
            await scaler.scale_sidecar(name, command, n)
        else:
            await self.sidecars.scale(name, command, n)
        if cell is None:
            self.applied.pop(name, None)
        else:
            self.applied[name] = cell
        return True


_SECRET_WORDS = ("password", "token", "secret", "creds", "nkey")


def _show(name: str, value: Any) -> str:
    if value is None:
        return "(unset)"
    if any(word in name for word in _SECRET_WORDS):
        return "(set)"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
