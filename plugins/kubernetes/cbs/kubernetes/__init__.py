"""cbs-kubernetes: ``cbs deploy render body.yaml`` writes the Kubernetes
manifests of a body by running the Helm chart ``deploy/helm/cbs`` (one source
of truth: ``helm install`` and ``cbs deploy render`` make the same objects).
docs/kubernetes.md describes the chart, its values and the command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import lazy_exports

if TYPE_CHECKING:
    from cbs.kubernetes.render import RenderError, chart_path, engine, render, values_for

__all__ = ["RenderError", "chart_path", "engine", "render", "values_for"]
# Imported when first used: the entry point (every `cbs` command) needs none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    dict.fromkeys(
        ("RenderError", "chart_path", "engine", "render", "values_for"), "cbs.kubernetes.render"
    ),
)
