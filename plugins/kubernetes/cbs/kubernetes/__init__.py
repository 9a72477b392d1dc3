"""cbs-kubernetes: ``cbs deploy render body.yaml`` writes the Kubernetes
manifests of a body by running the Helm chart ``deploy/helm/cbs`` (one source
of truth: ``helm install`` and ``cbs deploy render`` make the same objects).
docs/kubernetes.md describes the chart, its values and the command."""

from cbs.kubernetes.render import RenderError, chart_path, engine, render, values_for

__all__ = ["RenderError", "chart_path", "engine", "render", "values_for"]
