"""cbs-spec: a body described in ``body.yaml``, served and reconciled live
(``cbs run body.yaml``, ``cbs apply``, ``cbs diff``), autoscaling policies and
the capabilities a process pool provides (:class:`Scaler`). docs/deployment.md
describes the spec, every field, and the control subjects."""

from typing import TYPE_CHECKING

from cbs.kernel import lazy_exports

if TYPE_CHECKING:
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
# Imported when first used: the entry point (every `cbs` command) needs none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("Decision", "Engine", "Signals"), "cbs.spec.autoscale"),
        **dict.fromkeys(("QueueDepth", "Scaler"), "cbs.spec.capabilities"),
        **dict.fromkeys(("SpecError", "schema"), "cbs.spec.loader"),
        **dict.fromkeys(("BodySpec", "CellSpec", "read", "read_text"), "cbs.spec.model"),
        **dict.fromkeys(("Change", "Reconciler", "Report"), "cbs.spec.reconcile"),
        **dict.fromkeys(("RUNNER", "SpecRunner"), "cbs.spec.runner"),
    },
)
