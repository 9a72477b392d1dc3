"""``cbs deploy render SPEC [-o DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbs.kernel import UsageError, number

if TYPE_CHECKING:
    from cbs.kernel import Body


def configure_deploy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("render",), help="render: write the manifests")
    parser.add_argument("spec", metavar="SPEC", help="the body spec, e.g. body.yaml")
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="write one file per template into DIR (default: stdout)",
    )
    parser.add_argument(
        "-f",
        "--values",
        metavar="FILE",
        action="append",
        default=[],
        help="a values file of the chart (YAML; repeatable, the last wins; flags win over it)",
    )
    parser.add_argument("--name", metavar="NAME", help="release and object name (default: body.id)")
    parser.add_argument("--namespace", metavar="NS", default="default", help="(default: default)")
    parser.add_argument("--image", metavar="REPO[:TAG]", help="the body image (deploy/Dockerfile)")
    parser.add_argument("--nats", metavar="URL", help="the NATS URL inside the cluster")
    parser.add_argument(
        "--creds-secret", metavar="NAME", help="the Secret holding the NATS credentials file"
    )
    parser.add_argument(
        "--scaling", choices=("none", "hpa", "keda"), help="HPA on CPU, or KEDA on consumer lag"
    )
    parser.add_argument("--min-replicas", type=number(int, at_least=0), metavar="N")
    parser.add_argument("--max-replicas", type=number(int, at_least=1), metavar="N")
    parser.add_argument("--chart", metavar="DIR", help="the chart (default: deploy/helm/cbs)")


def _values_file(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a values file is a mapping")
    return data


def manifests(args: argparse.Namespace) -> dict[str, str]:
    """What ``cbs deploy render`` writes: template path -> manifest text."""
    from cbs.kubernetes.render import _merge, release_name, render, values_for
    from cbs.spec import read

    spec = read(args.spec)  # checked by cbs-spec: one line naming line and column if bad
    extra: dict[str, Any] = {}
    for path in args.values:
        extra = _merge(extra, _values_file(path))
    values = values_for(
        Path(args.spec).read_text("utf-8"),
        extra=extra,
        image=args.image,
        nats_url=args.nats,
        creds_secret=args.creds_secret,
        scaling=args.scaling,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    name = release_name(args.name or spec.body_id)
    return render(values, name=name, namespace=args.namespace, chart=args.chart)


def write(rendered: dict[str, str], output: str | None) -> None:
    """To stdout as one YAML stream, or one file per template into ``output``."""
    if output is None:
        for path, text in rendered.items():
            print(f"---\n# Source: {path}\n{text}", end="")
        return
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, text in rendered.items():
            (out / Path(path).name).write_text(text, "utf-8")
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    print(f"{len(rendered)} manifest(s) in {out}")


async def run_deploy(body: Body, args: argparse.Namespace) -> int:
    # Runs no body: a Helm engine renders the chart, in this process or the helm binary.
    write(manifests(args), args.output)
    return 0
