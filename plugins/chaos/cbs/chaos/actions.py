"""Actions of ``cbs chaos run``.

* ``inject`` (``rules``, ``replace``, ``instance``, ``expect``): sets fault
  rules over ``$CBS.CHAOS.*``; fails unless ``expect`` bodies (default: every
  running, unpaused process of the experiment, at least one) acknowledge.
* ``clear`` (``names``, ``instance``, ``expect``): removes rules the same way.
* ``kill_process`` (``process``, ``signal``: KILL, TERM or INT),
  ``pause_process`` (SIGSTOP), ``resume_process`` (SIGCONT),
  ``start_process`` (starts a declared process again and waits until it is
  ready): only processes the experiment started, by pid.
* ``restart_nats`` (``down``: seconds): kills the nats-server the experiment
  started (SIGKILL) and starts it again on the same port and store.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

from cbs.chaos.control import send
from cbs.chaos.rules import parse_rules

if TYPE_CHECKING:
    from cbs.chaos.runner import Run

__all__ = ["perform", "ActionFailed"]

_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


class ActionFailed(Exception):
    """An action did not do what it said; one line for the report."""


async def _control(run: Run, message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    expect = int(args.get("expect", 0)) or max(1, run.listening())
    replies = await send(
        run.prober_bus(), message, instance=args.get("instance"), expect=expect, wait=3.0
    )
    refused = [r["error"] for r in replies if r.get("error")]
    if refused:
        raise ActionFailed(f"refused: {refused[0]}")
    if len(replies) < expect:
        raise ActionFailed(f"{len(replies)} of {expect} bodies acknowledged")
    return {
        "acknowledged": sorted(
            ({"instance": r["instance"], "pid": r.get("pid")} for r in replies),
            key=lambda r: r["pid"] or 0,
        ),
        "rules": replies[0].get("rules", []),
    }


async def perform(run: Run, func: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one action; its output for the report (``ActionFailed`` if it failed)."""
    if func == "inject":
        rules = [r.to_dict() for r in parse_rules(args["rules"])]
        message = {"op": "set", "rules": rules, "replace": bool(args.get("replace"))}
        return await _control(run, message, args)
    if func == "clear":
        return await _control(run, {"op": "clear", "names": args.get("names") or []}, args)
    if func == "restart_nats":
        return await run.restart_nats(float(args.get("down", 0)))
    proc = run.process(args["process"])
    if func == "start_process":
        if proc.running():
            raise ActionFailed(f"process {proc.name} is running already")
        await run.start_process(proc)
        return {"pid": proc.pid}
    if not proc.running():
        raise ActionFailed(f"process {proc.name} is not running")
    pid = proc.pid
    if func == "kill_process":
        name = args.get("signal", "KILL")
        if proc.paused and name != "KILL":
            proc.signal(signal.SIGCONT)  # a stopped process cannot handle TERM
        proc.signal(_SIGNALS[name])
        code = await asyncio.to_thread(proc.wait, 10.0)
        if code is None:
            raise ActionFailed(f"process {proc.name} (pid {pid}) still runs after SIG{name}")
        return {"pid": pid, "signal": f"SIG{name}", "exit_code": code}
    if func == "pause_process":
        proc.signal(signal.SIGSTOP)
        proc.paused = True
        return {"pid": pid, "signal": "SIGSTOP"}
    proc.signal(signal.SIGCONT)  # resume_process
    proc.paused = False
    return {"pid": pid, "signal": "SIGCONT"}
