"""``cbs chaos run``: one experiment, bounded in time, on 127.0.0.1 only.

1. Start what the ``cbs`` extension declares: a nats-server on a free
   127.0.0.1 port (unless a 127.0.0.1 ``url`` is given), a prober body with
   only the NATS transport, and the processes, each ready once its body
   answers on ``$CBS.CHAOS.ALL`` with its pid.
2. **before**: check the steady-state hypothesis. If it does not hold, stop
   (status ``failed``): the method and the rollbacks do not run.
3. Run the method, in order, with its pauses.
4. **during**: check the hypothesis again, with the method's faults in force
   (Chaos Toolkit's check "after the method").
5. Run the rollbacks (a failed one does not stop the others).
6. **after**: check the hypothesis once more (an addition to Chaos Toolkit).
7. Stop every process the run started (by pid) and its nats-server.

Status: ``completed`` (the hypothesis held during the method), ``deviated``
(it did not), ``failed`` (it did not hold before), ``aborted`` (an error, or
the ``timeout`` ran out; rollbacks still run). ``recovered`` says whether it
held after. Exit code 0 when it held before and after.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbs.chaos import probes
from cbs.chaos.actions import ActionFailed, perform
from cbs.chaos.control import send
from cbs.chaos.experiment import Activity, Experiment, Process, load_experiment, tolerance_met
from cbs.chaos.report import markdown, summary_lines
from cbs.contracts import Bus, CbsError
from cbs.kernel import ANY_SCHEMA, Body, ConfigError

if TYPE_CHECKING:
    from cbs.nats.server import NatsServer

__all__ = ["Run", "run_file", "RunError"]

#: Extra time the rollbacks and the last check get when the run was cut short.
ROLLBACK_BOUND = 30.0
CLI = (sys.executable, "-m", "cbs.kernel.cli")


class RunError(Exception):
    """The run cannot go on (a process would not start, NATS is gone)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Started:
    """A process the experiment started; signalled only by its pid."""

    def __init__(self, spec: Process, log_dir: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.log = log_dir / f"{spec.name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.command: list[str] = []
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self, command: list[str], env: Mapping[str, str]) -> None:
        self.command = command
        argv = [*CLI, *command[1:]] if command[0] == "cbs" else command
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env)
            )
        self.paused = False

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            self.popen.send_signal(sig)  # by pid, and only while it is ours and alive

    def wait(self, timeout: float) -> int | None:
        assert self.popen is not None
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.exit_codes.append(code)
        return code

    def stop(self) -> None:
        if not self.running():
            return
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if self.wait(10.0) is None:
            self.signal(signal.SIGKILL)
            self.wait(5.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": self.command,
            "pid": self.pid,
            "exit_codes": self.exit_codes,
            "log": str(self.log),
        }


class Run:
    """The state of one run: its nats-server, prober body and processes."""

    def __init__(self, experiment: Experiment, body: Body, log_dir: Path) -> None:
        self.experiment = experiment
        self.body = body  # the command's body: only to know installed cells' schemas
        self.log_dir = log_dir
        self.server: NatsServer | None = None
        self.url = experiment.nats_url or ""
        self._prober: Body | None = None
        self.processes = {p.name: Started(p, log_dir) for p in experiment.processes}
        self.values: dict[str, str] = {}

    # -- what actions and probes use -------------------------------------------------

    def schema_of(self, service: str, verb: str) -> str:
        cell = self.body.cells.find_endpoint(service, verb)
        endpoint = next((e for e in cell.endpoints if e.verb == verb), None) if cell else None
        return endpoint.schema if endpoint is not None else ANY_SCHEMA

    @property
    def prober(self) -> Body:
        """The body that sends the probes' traffic and the control messages."""
        if self._prober is None:
            raise RunError("the prober is not started")
        return self._prober

    def prober_bus(self) -> Bus:
        if self.prober.bus is None:
            raise RunError("the prober is not connected")
        return self.prober.bus

    def process(self, name: str) -> Started:
        return self.processes[name]

    def listening(self) -> int:
        """Processes of the run that can answer control messages now."""
        return sum(1 for p in self.processes.values() if p.running() and not p.paused)

    async def start_process(self, proc: Started) -> None:
        spec = proc.spec
        command = self.experiment.substitute(list(spec.command), self.values)
        env = {**os.environ, **self.experiment.substitute(dict(spec.env), self.values)}
        env["CBS_CHAOS_CONTROL"] = "on"
        proc.spawn(command, env)
        deadline = time.monotonic() + spec.ready_timeout
        while time.monotonic() < deadline:
            if not proc.running():
                code = proc.wait(0)
                raise RunError(
                    f"process {proc.name} exited with code {code} before it was ready"
                    f" (log: {proc.log})"
                )
            replies = await send(self.prober_bus(), {"op": "list"}, wait=0.3, quiet=0.05)
            if any(r.get("pid") == proc.pid for r in replies):
                return
        raise RunError(
            f"process {proc.name} not ready in {spec.ready_timeout:g} s: its body did not"
            f" answer on $CBS.CHAOS.ALL (log: {proc.log})"
        )

    async def restart_nats(self, down: float) -> dict[str, Any]:
        server = self.server
        if server is None:
            raise ActionFailed("restart_nats needs a nats-server the experiment started")
        old = server.pid
        server.kill()
        if down:
            await asyncio.sleep(down)
        await asyncio.to_thread(server.start)
        # the prober reconnects on its own; wait until it can be used again
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                await self.prober_bus().publish("_cbs.chaos.ping", b"")
                break
            except CbsError:
                await asyncio.sleep(0.05)
        return {"old_pid": old, "pid": server.pid, "down": down}

    # -- setup and teardown ----------------------------------------------------------

    async def setup(self) -> None:
        from cbs.nats import plugin as nats_plugin

        if not self.url:
            from cbs.nats.server import NatsServer

            self.server = NatsServer()
            await asyncio.to_thread(self.server.start)
            self.url = self.server.url
        self.values = {**self.experiment.configuration, "nats_url": self.url}
        self._prober = Body(
            {"nats_url": self.url, "request_timeout": 5.0}, plugins=[nats_plugin], autoload=False
        )
        await self._prober.start(serve=False)
        for proc in self.processes.values():
            await self.start_process(proc)

    async def teardown(self) -> None:
        for proc in self.processes.values():
            await asyncio.to_thread(proc.stop)
        if self._prober is not None:
            try:
                await self._prober.stop()
            except Exception:  # the run is over; nothing else to save
                pass
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    # -- the steps -------------------------------------------------------------------

    async def check(self) -> dict[str, Any]:
        """The hypothesis now: each probe's value, tolerance and measurement."""
        measured: dict[str, dict[str, Any]] = {}
        results = []
        for activity in self.experiment.hypothesis:
            await asyncio.sleep(activity.before)
            args = self.experiment.substitute(dict(activity.arguments), self.values)
            key = json.dumps(args, sort_keys=True)
            if key not in measured:
                measured[key] = await probes.measure(self, args)
            value = getattr(probes, activity.func)(measured[key])
            results.append(
                {
                    **activity.to_dict(),
                    "value": value,
                    "tolerance_met": tolerance_met(activity.tolerance, value),
                    "measurement": measured[key],
                }
            )
            await asyncio.sleep(activity.after)
        return {
            "steady_state_met": all(r["tolerance_met"] for r in results),
            "probes": results,
        }

    async def apply(self, activity: Activity) -> dict[str, Any]:
        record: dict[str, Any] = {**activity.to_dict(), "start": _now()}
        began = time.monotonic()
        await asyncio.sleep(activity.before)
        args = self.experiment.substitute(dict(activity.arguments), self.values)
        try:
            if activity.type == "probe":
                measurement = await probes.measure(self, args)
                record["output"] = {
                    "value": getattr(probes, activity.func)(measurement),
                    "measurement": measurement,
                }
            else:
                record["output"] = await perform(self, activity.func, args)
            record["status"] = "succeeded"
        except (ActionFailed, CbsError, ConfigError, RunError) as exc:
            record["status"] = "failed"
            record["error"] = str(exc)
        await asyncio.sleep(activity.after)
        record["end"] = _now()
        record["duration"] = round(time.monotonic() - began, 3)
        return record


async def execute(run: Run, timeout: float) -> dict[str, Any]:
    """Run the experiment; the journal (the JSON report)."""
    exp = run.experiment
    journal: dict[str, Any] = {
        "title": exp.title,
        "description": exp.description,
        "hypothesis": exp.hypothesis_title,
        "started": _now(),
        "status": "aborted",
        "recovered": False,
        "hypothesis_held": {"before": None, "during": None, "after": None},
        "steady_states": {"before": None, "during": None, "after": None},
        "run": [],
        "rollbacks": [],
    }
    began = time.monotonic()
    held = journal["hypothesis_held"]
    states = journal["steady_states"]
    method_started = timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await run.setup()
            states["before"] = await run.check()
            held["before"] = states["before"]["steady_state_met"]
            if not held["before"]:
                journal["status"] = "failed"
            else:
                method_started = True
                for activity in exp.method:
                    journal["run"].append(await run.apply(activity))
                states["during"] = await run.check()
                held["during"] = states["during"]["steady_state_met"]
                journal["status"] = "completed" if held["during"] else "deviated"
    except TimeoutError:
        timed_out = True
        journal["status"] = "aborted"
        journal["error"] = f"the run took longer than its timeout of {timeout:g} s"
    except (RunError, CbsError, ConfigError) as exc:
        journal["status"] = "aborted"
        journal["error"] = str(exc)
    try:
        if method_started:
            pauses = sum(a.before + a.after for a in exp.rollbacks)
            async with asyncio.timeout(ROLLBACK_BOUND + pauses):
                for activity in exp.rollbacks:
                    journal["rollbacks"].append(await run.apply(activity))
                if not timed_out:
                    states["after"] = await run.check()
                    held["after"] = states["after"]["steady_state_met"]
                    journal["recovered"] = held["after"]
    except TimeoutError:
        journal.setdefault("error", f"the rollbacks took longer than {ROLLBACK_BOUND:g} s")
    except (RunError, CbsError, ConfigError) as exc:
        journal.setdefault("error", str(exc))
    finally:
        await run.teardown()
    journal["nats"] = {"url": run.url, "started_by_run": run.server is not None}
    journal["processes"] = [p.to_dict() for p in run.processes.values()]
    journal["ended"] = _now()
    journal["duration"] = round(time.monotonic() - began, 3)
    return journal


async def run_file(body: Body, path: str, *, report: str, timeout: float | None) -> int:
    """``cbs chaos run``: run ``path``, write ``report``.json and .md."""
    experiment = load_experiment(path)  # ConfigError: one line, exit 2
    base = Path(report)
    log_dir = base.parent / f"{base.name}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    run = Run(experiment, body, log_dir)
    journal = await execute(run, timeout or experiment.timeout)
    json_path = base.parent / f"{base.name}.json"
    md_path = base.parent / f"{base.name}.md"
    json_path.write_text(json.dumps(journal, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(journal), encoding="utf-8")
    for line in summary_lines(journal):
        print(line)
    print(f"report: {json_path}, {md_path}")
    if journal.get("error"):
        print(f"cbs: error: {journal['error']}", file=sys.stderr)
    held = journal["hypothesis_held"]
    return 0 if held["before"] and held["after"] else 1
