"""Render the chart ``deploy/helm/cbs`` for a body spec, offline.

The chart derives what it can from ``bodyYaml`` itself (the name's label, the
metrics port, the grace period, the KEDA triggers of durable verbs), so
``helm install --set-file bodyYaml=body.yaml`` and ``cbs deploy render
body.yaml`` make the same objects. This module only checks the spec with
cbs-spec, turns the command's flags into values and runs a Helm engine: the
``helm`` binary when one is on ``PATH``, else helm-python-sdk (Helm v4 as a
library; its ``render`` contacts no cluster and fetches nothing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cbs.kernel import UsageError

__all__ = ["RenderError", "chart_path", "engine", "render", "values_for"]

#: ``deploy/helm/cbs`` of the source tree this package is installed from (editable).
SOURCE_CHART = Path(__file__).resolve().parents[4] / "deploy" / "helm" / "cbs"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?")
_SOURCE = re.compile(r"^# Source: (\S+)\n", re.M)


class RenderError(UsageError):
    """The chart, the values or the engine refused: one line."""


def chart_path(chart: str | os.PathLike[str] | None = None) -> Path:
    """The chart to render: ``chart`` if given, else the source tree's."""
    path = Path(chart) if chart is not None else SOURCE_CHART
    if not (path / "Chart.yaml").is_file():
        where = f"{path}" if chart is not None else "deploy/helm/cbs of the CBS source"
        raise RenderError(f"no Helm chart at {where}: give --chart DIR")
    return path


def engine() -> str:
    """``helm`` (the binary on PATH) or ``sdk`` (helm-python-sdk)."""
    if shutil.which("helm"):
        return "helm"
    try:
        import helm_python  # noqa: F401
    except ImportError:
        raise RenderError(
            "no Helm engine: install the helm binary or `pip install cbs-kubernetes[helm]`"
            " (helm-python-sdk)"
        ) from None
    return "sdk"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def release_name(body_id: str) -> str:
    """A body id as a release (and object) name: ``order_book`` -> ``order-book``."""
    name = body_id.lower().replace("_", "-").strip("-")
    if _DNS_LABEL.fullmatch(name) is None:
        raise RenderError(f"body id {body_id!r} is not usable as a Kubernetes name: give --name")
    return name


def values_for(
    spec_text: str,
    *,
    extra: Mapping[str, Any] | None = None,
    image: str | None = None,
    nats_url: str | None = None,
    creds_secret: str | None = None,
    scaling: str | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> dict[str, Any]:
    """The chart's values for a spec: ``bodyYaml`` and the flags, over ``extra``
    (values files). ``image`` is ``repository[:tag]``."""
    values = _merge(dict(extra or {}), {"bodyYaml": spec_text})
    flags: dict[str, Any] = {}
    if image:
        repository, _, tag = image.rpartition(":") if _has_tag(image) else (image, "", "")
        flags["image"] = {"repository": repository, **({"tag": tag} if tag else {})}
    if nats_url:
        flags["nats"] = {"url": nats_url}
    if creds_secret:
        flags.setdefault("nats", {})["credsSecret"] = {"name": creds_secret}
    scale: dict[str, Any] = {}
    if scaling:
        scale["mode"] = scaling
    if min_replicas is not None:
        scale["minReplicas"] = min_replicas
    if max_replicas is not None:
        scale["maxReplicas"] = max_replicas
    if scale:
        flags["autoscaling"] = scale
    return _merge(values, flags)


def _has_tag(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return ":" in last and "@" not in last


def _one_line(text: str) -> str:
    lines = [line.strip(" -") for line in text.strip().splitlines() if line.strip(" -")]
    if lines and "meet the specifications of the schema" in lines[0]:
        lines[0] = "values.schema.json:"  # Helm's heading of the list below
    kept = [line for line in lines if line.rstrip(":") != "cbs"]
    return " ".join(kept).replace(":;", ":") or "failed"


def _split(stream: str) -> dict[str, str]:
    """``helm template`` output -> template path -> its text."""
    parts = _SOURCE.split(stream)
    out: dict[str, str] = {}
    for path, text in zip(parts[1::2], parts[2::2], strict=True):
        text = text.strip().removesuffix("---").strip()
        out[path] = (out[path] + "\n---\n" + text) if path in out else text
    return out


def _helm_binary(chart: Path, values: Mapping[str, Any], name: str, namespace: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(values, fh)
    try:
        done = subprocess.run(
            ["helm", "template", name, str(chart), "--namespace", namespace, "-f", fh.name],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RenderError("helm template: " + _one_line(done.stderr.replace("Error:", "")))
    return done.stdout


def render(
    values: Mapping[str, Any],
    *,
    name: str,
    namespace: str = "default",
    chart: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Render the chart: template path -> manifest text, empty ones left out,
    in template order."""
    path = chart_path(chart)
    if engine() == "helm":
        rendered = _split(_helm_binary(path, values, name, namespace))
    else:
        import helm_python

        try:
            loaded = helm_python.Chart.load(path)
            with loaded:
                rendered = loaded.render(
                    dict(values), name=name, namespace=namespace, is_install=True
                )
        except helm_python.HelmError as exc:
            raise RenderError(_one_line(str(exc))) from None
    return {k: v.strip() + "\n" for k, v in sorted(rendered.items()) if v.strip()}
