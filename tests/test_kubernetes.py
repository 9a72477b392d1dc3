"""The Helm chart deploy/helm/cbs, the Kustomize tree, ``cbs deploy render``
and deploy/Dockerfile, all offline: the chart is rendered by a real Helm
engine (helm-python-sdk: Helm v4 as a library), Kustomize by ``kubectl
kustomize``, and every built-in object is validated against the Kubernetes
schemas bundled in kubernetes-validate. docs/kubernetes.md's worked example
is rendered as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from cbs_process import CBS_EXECUTABLE, CbsProcess, processes, run_cbs
from markdown_blocks import file_blocks

from cbs.kubernetes import render, values_for
from cbs.nats.server import free_port
from cbs.spec import read_text

__all__ = ["processes"]  # the fixture

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "cbs"
KUSTOMIZE = ROOT / "deploy" / "kustomize"
DOC = (ROOT / "docs" / "kubernetes.md").read_text("utf-8")
EXAMPLE = file_blocks(DOC, "## Worked example")
K8S_VERSION = "1.31.0"
#: Objects of CRDs: kubernetes-validate has no schema for them; checked below.
CRDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
KUBECTL = shutil.which("kubectl")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The objects of a render, each validated (every test validates what it renders)."""
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text)]
    objs = [d for d in docs if d]
    validate_all(objs)
    return objs


def stream_objects(text: str) -> list[dict[str, Any]]:
    objs = [d for d in yaml.safe_load_all(text) if d]
    validate_all(objs)
    return objs


def by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for obj in objs:
        assert obj["kind"] not in kinds, f"two objects of kind {obj['kind']}"
        kinds[obj["kind"]] = obj
    return kinds


def chart(values: dict[str, Any], name: str = "shop", namespace: str = "shop") -> dict[str, str]:
    """What ``helm install NAME deploy/helm/cbs --namespace NS`` would apply."""
    with helm_python.Chart.load(CHART) as loaded:
        out = loaded.render(values, name=name, namespace=namespace, is_install=True)
    return {k: v.strip() + "\n" for k, v in sorted(out.items()) if v.strip()}


def check_crd(obj: dict[str, Any]) -> None:
    """The structure of the CRD objects, as their operators read it."""
    kind, spec = obj["kind"], obj["spec"]
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"]
    if kind == "ScaledObject":
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert spec["scaleTargetRef"]["name"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "nats-jetstream"
            meta = trigger["metadata"]
            assert set(meta) == {
                "natsServerMonitoringEndpoint",
                "account",
                "stream",
                "consumer",
                "lagThreshold",
            }
            assert all(isinstance(v, str) and v for v in meta.values()), meta  # KEDA: strings
            assert int(meta["lagThreshold"]) >= 1
    elif kind == "ServiceMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    elif kind == "PrometheusRule":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"]
    else:
        raise AssertionError(f"no check for {kind}")


def validate_all(objs: list[dict[str, Any]]) -> None:
    assert objs
    for obj in objs:
        if obj["kind"] in CRDS:
            check_crd(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def example_values(tmp_path: Path | None = None) -> dict[str, Any]:
    """``-f values.yaml --set-file bodyYaml=body.yaml`` of the doc's helm install
    (parsed by Helm's own --set-file parser when given a folder for the files)."""
    values: dict[str, Any] = yaml.safe_load(EXAMPLE["values.yaml"])
    if tmp_path is None:
        return {**values, "bodyYaml": EXAMPLE["body.yaml"]}
    (tmp_path / "body.yaml").write_text(EXAMPLE["body.yaml"])
    return {**values, **helm_python.parse_set_file(f"bodyYaml={tmp_path / 'body.yaml'}")}


# The chart


def test_default_values_render_valid_objects() -> None:
    objs = objects(chart({}))
    validate_all(objs)
    assert sorted(by_kind(objs)) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]


def test_the_worked_example_renders_as_the_doc_says(tmp_path: Path) -> None:
    assert "--set-file bodyYaml=body.yaml" in DOC and "-f values.yaml" in DOC
    spec = read_text(EXAMPLE["body.yaml"], "body.yaml")  # a valid spec for cbs-spec
    assert spec.body_id == "shop" and spec.settings["durable"] == "greeter.say_hello"
    assert example_values(tmp_path) == example_values()
    objs = objects(chart(example_values(tmp_path)))
    validate_all(objs)
    kinds = by_kind(objs)
    assert sorted(kinds) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceMonitor",
    ]
    assert {o["metadata"]["name"] for o in objs} == {"shop"}
    assert {o["metadata"]["namespace"] for o in objs} == {"shop"}
    assert kinds["ConfigMap"]["data"]["body.yaml"] == EXAMPLE["body.yaml"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 35  # drain_timeout 20 + 15
    assert "replicas" not in kinds["Deployment"]["spec"]  # KEDA owns the count
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/shop/cbs:0.2.0"
    assert container["args"] == ["run", "/etc/cbs/body.yaml"]
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    assert env_vars["NATS_CREDS"] == "/etc/nats-creds/nats.creds"
    assert env_vars["NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222"
    assert env_vars["CBS_METRICS_PORT"] == "9090" and env_vars["CBS_METRICS_HOST"] == "0.0.0.0"
    secret = next(v for v in pod["volumes"] if v["name"] == "nats-creds")["secret"]
    assert secret == {
        "secretName": "shop-nats",
        "items": [{"key": "nats.creds", "path": "nats.creds"}],
    }
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in kinds["PodDisruptionBudget"]["spec"]
    scaled = kinds["ScaledObject"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 8)
    assert scaled["triggers"][0]["metadata"] | {} == {
        "natsServerMonitoringEndpoint": "nats.nats.svc.cluster.local:8222",
        "account": "$G",
        "stream": "CBS_greeter",
        "consumer": "CBS_greeter_say_hello",
        "lagThreshold": "50",
    }


def test_every_durable_verb_of_the_spec_is_a_trigger() -> None:
    body = (
        "version: 1\nbody: {id: bank}\nservices:\n"
        "  ledger:\n    autoscale: {lag: 7}\n"
        "    verbs: {credit: {durable: true}, debit: {durable: true}, read: {}}\n"
        "  audit:\n    verbs: {write: {durable: true}}\n"
    )
    objs = objects(chart({"bodyYaml": body, "autoscaling": {"mode": "keda"}}))
    validate_all(objs)
    triggers = [t["metadata"] for t in by_kind(objs)["ScaledObject"]["spec"]["triggers"]]
    assert [(t["stream"], t["consumer"], t["lagThreshold"]) for t in triggers] == [
        ("CBS_audit", "CBS_audit_write", "100"),  # the chart's default lagThreshold
        ("CBS_ledger", "CBS_ledger_credit", "7"),
        ("CBS_ledger", "CBS_ledger_debit", "7"),
    ]


def test_hpa_mode() -> None:
    objs = objects(chart({"autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 4}}))
    validate_all(objs)
    kinds = by_kind(objs)
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert "replicas" not in kinds["Deployment"]["spec"]
    assert "ScaledObject" not in kinds


def test_the_pod_is_hardened_probed_and_bounded() -> None:
    pod = by_kind(objects(chart({})))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["terminationGracePeriodSeconds"] == 25  # the default drain_timeout 10 + 15


def test_the_spec_sets_port_and_grace_period() -> None:
    body = "version: 1\nsettings: {metrics_port: 9464, drain_timeout: 7.5}\ncells: {greet: {}}\n"
    kinds = by_kind(objects(chart({"bodyYaml": body})))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 23  # ceil(7.5) + 15 > drain_timeout
    assert pod["containers"][0]["ports"][0]["containerPort"] == 9464
    assert kinds["Service"]["spec"]["ports"][0]["port"] == 9464
    explicit = chart({"bodyYaml": body, "terminationGracePeriodSeconds": 60})
    assert "terminationGracePeriodSeconds: 60" in explicit["cbs/templates/deployment.yaml"]


def test_a_changed_spec_rolls_the_pods_unless_asked_not_to() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        deployment = by_kind(objects(chart(values)))["Deployment"]
        return dict(deployment["spec"]["template"]["metadata"].get("annotations") or {})

    one = annotations({"bodyYaml": "version: 1\ncells: {greet: {}}\n"})
    two = annotations({"bodyYaml": "version: 1\ncells: {greet: {}}\nbalancing: {step_out: 0.5}\n"})
    assert one["cbs.io/body-yaml-sha256"] != two["cbs.io/body-yaml-sha256"]
    assert annotations({"rollOnSpecChange": False}) == {}


def test_monitoring_objects_come_from_the_chart_files() -> None:
    values = {
        "monitoring": {"dashboard": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    }
    objs = objects(chart(values))
    validate_all(objs)
    dashboard = next(o for o in objs if o["metadata"]["name"] == "shop-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    kinds = by_kind([o for o in objs if o is not dashboard])
    groups = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())["groups"]
    assert kinds["PrometheusRule"]["spec"]["groups"] == groups
    assert kinds["ServiceMonitor"]["metadata"]["labels"]["release"] == "prometheus"
    assert {o["kind"] for o in objects(chart({}))}.isdisjoint(CRDS)  # all off by default


def test_pdb_takes_either_form() -> None:
    pdb = by_kind(objects(chart({})))["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    values = {"podDisruptionBudget": {"minAvailable": None, "maxUnavailable": "25%"}}
    pdb = by_kind(objects(chart(values)))["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == "25%" and "minAvailable" not in pdb
    off = {"podDisruptionBudget": {"enabled": False}}
    assert "PodDisruptionBudget" not in by_kind(objects(chart(off)))


@pytest.mark.parametrize(
    "values, says",
    [
        ({"autoscaling": {"mode": "vpa"}}, "/autoscaling/mode"),
        ({"nats": {"url": "http://nats:4222"}}, "/nats/url"),
        ({"replicas": 3}, "replicas"),
        ({"metrics": {"port": 0}}, "/metrics/port"),
    ],
)
def test_the_values_schema_refuses(values: dict[str, Any], says: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(says)):
        chart(values)


def test_keda_without_a_durable_verb_fails_with_the_reason() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="no durable verb"):
        chart({"autoscaling": {"mode": "keda"}})


def test_the_chart_lints_clean() -> None:
    report = helm_python.lint(CHART, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


# cbs deploy render


def write_example(tmp_path: Path) -> tuple[Path, Path]:
    body, values = tmp_path / "body.yaml", tmp_path / "values.yaml"
    body.write_text(EXAMPLE["body.yaml"])
    values.write_text(EXAMPLE["values.yaml"])
    return body, values


def test_render_writes_what_helm_install_makes(tmp_path: Path) -> None:
    body, values = write_example(tmp_path)
    done = run_cbs(
        "deploy", "render", str(body), "-f", str(values), "--namespace", "shop", env=env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rendered = stream_objects(done.stdout)
    validate_all(rendered)
    assert rendered == objects(chart(example_values()))  # one source of truth
    assert re.findall(r"^# Source: (\S+)$", done.stdout, re.M) == sorted(chart(example_values()))

    out = tmp_path / "manifests"
    done = run_cbs(
        "deploy", "render", str(body), "-f", str(values), "--namespace", "shop",
        "-o", str(out), env=env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(Path(k).name for k in chart(example_values()))
    on_disk = [d for f in sorted(out.iterdir()) for d in yaml.safe_load_all(f.read_text()) if d]
    assert on_disk == rendered


def test_render_flags_are_values(tmp_path: Path) -> None:
    body = tmp_path / "order_book.yaml"
    body.write_text("version: 1\ncells: {greet: {}}\n")
    done = run_cbs(
        "deploy", "render", str(body), "--image", "reg.example:5000/team/cbs:1.2.3",
        "--nats", "tls://nats.prod:4222", "--creds-secret", "books", "--scaling", "hpa",
        "--max-replicas", "9", env=env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    objs = stream_objects(done.stdout)
    validate_all(objs)
    kinds = by_kind(objs)
    assert kinds["Deployment"]["metadata"]["name"] == "order-book"  # from the file name
    assert kinds["Deployment"]["metadata"]["namespace"] == "default"
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example:5000/team/cbs:1.2.3"
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    assert env_vars["NATS_URL"] == "tls://nats.prod:4222" and "NATS_CREDS" in env_vars
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 9
    assert values_for("x", image="cbs")["image"] == {"repository": "cbs"}


@pytest.mark.parametrize(
    "args, says",
    [
        (["--scaling", "keda"], "no durable verb"),
        (["--nats", "localhost:4222"], "values.schema.json: at '/nats/url'"),
        (["--chart", "/nonexistent"], "no Helm chart at /nonexistent"),
        (["--name", "Not_A_Name!"], "not usable as a Kubernetes name"),
        (["-f", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read it"),
    ],
)
def test_render_failures_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    body = tmp_path / "body.yaml"
    body.write_text("version: 1\ncells: {greet: {}}\n")
    done = run_cbs("deploy", "render", str(body), *args, env=env())
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("cbs: error: ") and says in done.stderr, done.stderr


def test_a_bad_spec_is_refused_with_its_line(tmp_path: Path) -> None:
    body = tmp_path / "body.yaml"
    body.write_text("version: 1\ncells:\n  greet: {replica: 2}\n")
    done = run_cbs("deploy", "render", str(body), env=env())
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith(f"cbs: error: {body}:3:") and "replica" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _no_network_prefix() -> list[str]:
    """``unshare -rn``: a user and network namespace with no interface but lo."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to run without a network")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("unshare -rn is not allowed here (user namespaces off)")
    return [unshare, "-rn"]


def test_render_needs_no_network(tmp_path: Path) -> None:
    body, values = write_example(tmp_path)
    done = subprocess.run(
        [*_no_network_prefix(), CBS_EXECUTABLE, "deploy", "render", str(body), "-f", str(values),
         "--namespace", "shop"],
        capture_output=True, text=True, timeout=60, env=env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stream_objects(done.stdout) == objects(chart(example_values()))


def test_helm_template_output_is_split_by_source() -> None:
    """The helm binary's stream (not installed here) as the engine reads it."""
    from cbs.kubernetes.render import _split

    stream = (
        "---\n# Source: cbs/templates/service.yaml\napiVersion: v1\nkind: Service\n"
        "---\n# Source: cbs/templates/pdb.yaml\napiVersion: policy/v1\n"
        "---\n# Source: cbs/templates/pdb.yaml\nkind: Other\n"
    )
    assert _split(stream) == {
        "cbs/templates/service.yaml": "apiVersion: v1\nkind: Service",
        "cbs/templates/pdb.yaml": "apiVersion: policy/v1\n---\nkind: Other",
    }


def test_render_in_process_matches_the_chart() -> None:
    values = example_values()
    assert render(values, name="shop", namespace="shop") == chart(values)


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def consumer_exists(url: str, stream: str, consumer: str, seconds: float = 10) -> bool:
    import nats
    from nats.js.errors import NotFoundError

    async def look() -> bool:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    info = await js.consumer_info(stream, consumer)
                    return bool(info.config.durable_name == consumer)
                except NotFoundError:
                    await asyncio.sleep(0.05)
            return False
        finally:
            await nc.close()

    return asyncio.run(look())


def test_the_pod_command_serves_the_probes_and_drains_on_sigterm(
    tmp_path: Path, nats_server: Any, processes: list[CbsProcess]
) -> None:
    """The container of the worked example, run as a process: its args and env
    (the in-cluster addresses swapped for 127.0.0.1) on a real nats-server
    with JetStream; the probes' paths answer 200 on the port, and SIGTERM ends
    the body well within the pod's grace period."""
    kinds = by_kind(objects(chart(example_values())))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    spec_file = tmp_path / "body.yaml"
    spec_file.write_text(kinds["ConfigMap"]["data"]["body.yaml"])
    port = free_port()
    pod_env = env()
    for var in container["env"]:
        pod_env[var["name"]] = var.get("value") or "shop-7d4b9-x2x9q"  # fieldRef: the pod name
    del pod_env["NATS_CREDS"]  # no accounts on the test server
    pod_env |= {
        "NATS_URL": nats_server.url,
        "CBS_METRICS_HOST": "127.0.0.1",
        "CBS_METRICS_PORT": str(port),
    }
    args = [a.replace("/etc/cbs/body.yaml", str(spec_file)) for a in container["args"]]
    body = CbsProcess(*args, env=pod_env)
    processes.append(body)
    probe = container["readinessProbe"]["httpGet"]["path"]
    deadline = time.monotonic() + 30
    status, report = 0, {}
    while time.monotonic() < deadline and body.popen.poll() is None:
        try:
            status, report = get(f"http://127.0.0.1:{port}{probe}")
        except OSError:
            status = 0
        if status == 200:  # only once the spec's cells are registered
            break
        time.sleep(0.1)
    assert status == 200, (report, body.stop())
    assert report["cells"] == {"greet": "registered"} and report["bus"]["transport"] == "nats"
    # The KEDA trigger's stream and consumer are the ones the body made
    (trigger,) = kinds["ScaledObject"]["spec"]["triggers"]
    assert consumer_exists(
        nats_server.url, trigger["metadata"]["stream"], trigger["metadata"]["consumer"]
    )
    alive_path = container["livenessProbe"]["httpGet"]["path"]
    assert get(f"http://127.0.0.1:{port}{alive_path}") == (200, {"alive": True})
    # SIGTERM at once: the handlers were in place before the first cell started.
    started = time.monotonic()
    code, _, stderr = body.stop()
    assert code == 0, stderr
    assert time.monotonic() - started < pod["terminationGracePeriodSeconds"]
    assert "signal received: draining" in stderr


# Kustomize


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is needed for the Kustomize tests"
    done = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return stream_objects(done.stdout)


def test_kustomize_base_is_the_charts_default_objects() -> None:
    objs = kustomize(KUSTOMIZE / "base")
    validate_all(objs)
    kinds = by_kind(objs)
    assert sorted(kinds) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    helm = by_kind(objects(chart({"rollOnSpecChange": False}, name="cbs", namespace="default")))
    config_map = kinds["ConfigMap"]["metadata"]["name"]
    assert re.fullmatch(r"cbs-[a-z0-9]{10}", config_map)  # the generator's content hash
    assert kinds["ConfigMap"]["data"] == helm["ConfigMap"]["data"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    helm_pod = helm["Deployment"]["spec"]["template"]["spec"]
    for volume in helm_pod["volumes"]:
        if volume["name"] == "spec":
            volume["configMap"]["name"] = config_map
    assert pod == helm_pod
    for kind in ("Service", "PodDisruptionBudget"):
        assert kinds[kind]["spec"] == helm[kind]["spec"]
    assert kinds["Deployment"]["spec"] == helm["Deployment"]["spec"] | {
        "template": kinds["Deployment"]["spec"]["template"]
    }


def test_kustomize_overlay() -> None:
    objs = kustomize(KUSTOMIZE / "overlays" / "production")
    validate_all(objs)
    kinds = by_kind(objs)
    assert {o["metadata"]["namespace"] for o in objs} == {"shop"}
    spec = read_text(kinds["ConfigMap"]["data"]["body.yaml"], "body.yaml")
    assert spec.body_id == "shop"
    drain = float(spec.settings["drain_timeout"])
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > drain
    assert deployment["spec"]["template"]["metadata"]["labels"]["cbs.body"] == "shop"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/shop/cbs:0.2.0"
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    assert env_vars["NATS_CREDS"] == "/etc/nats-creds/nats.creds"
    assert {"name": "nats-creds", "mountPath": "/etc/nats-creds", "readOnly": True} in container[
        "volumeMounts"
    ]
    spec_volume = next(v for v in pod["volumes"] if v["name"] == "spec")
    assert spec_volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "cbs"


# The image


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "deploy" / "Dockerfile").read_text("utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_cbs_as_a_non_root_user() -> None:
    instructions = dockerfile()
    assert instructions[0][0] == "FROM" and re.fullmatch(r"python:3\.1\d-slim", instructions[0][1])
    users = [arg for op, arg in instructions if op == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    run_as = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    assert int(uid) == run_as
    last = {op: arg for op, arg in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["cbs"]
    assert json.loads(last["CMD"]) == ["run", "/etc/cbs/body.yaml"]
    assert last["EXPOSE"] == "9090"


def test_dockerfile_copies_what_exists_and_installs_it() -> None:
    instructions = dockerfile()
    copied = []
    for op, arg in instructions:
        if op == "COPY":
            *sources, _dest = arg.split()
            copied += sources
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    installs = " ".join(arg for op, arg in instructions if op == "RUN" and "pip install" in arg)
    for folder in (c for c in copied if c.startswith("plugins/")):
        assert f"./{folder}" in installs, f"{folder} is copied but not installed"
        assert (ROOT / folder / "setup.cfg").is_file()
    for needed in ("plugins/nats", "plugins/metrics", "plugins/spec", "plugins/jetstream"):
        assert needed in copied


def test_the_doc_is_linked_from_the_readme() -> None:
    assert "(docs/kubernetes.md)" in (ROOT / "README.md").read_text("utf-8")
