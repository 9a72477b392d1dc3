"""cbs-spec: a body described in ``body.yaml``, served and reconciled live
(``cbs run body.yaml``, ``cbs apply``, ``cbs diff``), autoscaling policies and
the capabilities a process pool provides (:class:`Scaler`). docs/deployment.md
describes the spec, every field, and the control subjects."""

from cbs.spec.autoscale import Decision, Engine, Signals
from cbs.spec.capabilities import QueueDepth, Scaler
from cbs.spec.loader import SpecError, schema
from cbs.spec.model import BodySpec, CellSpec, read, read_text
from cbs.spec.reconcile import Change, Reconciler, Report
from cbs.spec.runner import RUNNER, SpecRunner

__all__ = [
    "BodySpec",
    "CellSpec",
    "Change",
    "Decision",
    "Engine",
    "QueueDepth",
    "RUNNER",
    "Reconciler",
    "Report",
    "Scaler",
    "Signals",
    "SpecError",
    "SpecRunner",
    "read",
    "read_text",
    "schema",
]
