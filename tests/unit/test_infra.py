"""The Kubernetes manifests in ``infra/kubernetes``, checked offline (no cluster, no network).

What this checks:

1. **Schemas.** Every Kubernetes object, both as written (resource files, the example Secret) and
   as each kustomization renders it (patches and generated ConfigMaps included), validates against
   the Kubernetes 1.30 schemas of ``kubernetes-validate`` in strict mode: an unknown or misspelt
   field fails, as does a wrong type or a missing required field. Every file under
   ``infra/kubernetes`` must have a role below (:data:`ROLES`), so none escapes unchecked.
   Only core Kubernetes kinds are used; there is no CRD (the Prometheus Adapter's rule is Helm
   values, checked in 3), and a kind without a schema fails rather than being skipped.
2. **Kustomizations.** :func:`render` is a small renderer for exactly the kustomize features these
   files use (``resources``, ``namespace``, ``images``, ``configMapGenerator`` with ``envs``,
   ``files``, ``literals`` and ``behavior: merge``, strategic-merge ``patches`` found by kind and
   name, content-hash suffixes and the pod-template references to them). It refuses any other
   field rather than ignoring it, fails on a listed file that does not exist (or a file outside
   the kustomization's folder, which kustomize forbids) and on a patch that matches no resource.
   Its strategic merge knows the merge keys of the lists in a pod spec and replaces other lists,
   as kustomize does; it does not implement ``$patch`` directives. Where ``kubectl`` is installed,
   its ``kubectl kustomize`` output must equal ours (hash suffixes aside: kustomize versions
   differ in them); elsewhere that comparison is skipped.
3. **Consistency** of the rendered manifests with the bridge: the grace period outlasts preStop
   plus the handover (or drain) timeout; a numeric non-root user, a read-only root filesystem and
   every SQLite file on a writable volume; the probes on ``/readyz`` and ``/healthz``; the HPA's
   metric is the gauge ``agent.observability.metrics`` defines, and the Prometheus Adapter rule
   serves that name; selectors, Service, Ingress and Secret references agree; ``Settings`` accepts
   the pods' environment; the agents ConfigMap loads with the bridge's own agent loader.

Not checked: what only a cluster knows (admission policies, the ingress controller's reading of
its annotations, that Prometheus scrapes the pods and the adapter serves the metric).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agent.config.loader import load
from agent.observability.metrics import Metrics
from agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2] / "infra" / "kubernetes"
BASE = ROOT / "base"
PRODUCTION = ROOT / "overlays" / "production"
KUSTOMIZATIONS = [BASE, PRODUCTION]
KUBERNETES_VERSION = "1.30"

#: Every file under infra/kubernetes that is not a kustomization.yaml or a file a kustomization
#: lists, and how it is checked. A new file must be added here (or listed by a kustomization).
ROLES = {
    "overlays/production/secret.example.yaml": "standalone manifest: schema-validated; its keys "
    "cover the Deployment's secretKeyRefs (kept out of the kustomization so an apply never "
    "overwrites the real Secret with placeholders)",
    "overlays/production/prometheus-adapter-values.yaml": "Helm values, not a manifest: its rule "
    "must serve the HPA's metric",
}

#: Lists in a pod spec that strategic merge merges item by item, by this key (the rest replace).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
_GENERATED = "test-infra/hashed"  # marks a generated ConfigMap until its name gets the hash

Doc = dict[str, Any]


# -- loading and rendering ------------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _inside(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{root}: {name} is outside the kustomization's folder")
    if not path.is_file():
        raise ValueError(f"{root}: {name} does not exist")
    return path


def _check_keys(where: str, mapping: Doc, allowed: set[str]) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        raise ValueError(f"{where}: the test's renderer does not handle {sorted(unknown)}")


def _strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            if isinstance(name, str) and name.startswith("$"):
                raise ValueError(f"the test's renderer does not handle {name}")
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = _strategic_merge(merged[name], value, name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing.get(merge_key) == item.get(merge_key):
                    merged_list[index] = _strategic_merge(existing, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            data[name] = value
    return data


def _generate(root: Path, spec: Doc) -> Doc:
    _check_keys(
        f"{root} configMapGenerator",
        spec,
        {"name", "behavior", "envs", "files", "literals", "options"},
    )
    _check_keys(
        f"{root} configMapGenerator options", spec.get("options", {}), {"disableNameSuffixHash"}
    )
    data: dict[str, str] = {}
    for name in spec.get("envs", []):
        data.update(_env_file(_inside(root, name)))
    for entry in spec.get("files", []):
        key, _, name = entry.rpartition("=")
        path = _inside(root, name)
        data[key or path.name] = path.read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    metadata: Doc = {"name": spec["name"]}
    if not spec.get("options", {}).get("disableNameSuffixHash", False):
        metadata["annotations"] = {_GENERATED: "true"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _containers(doc: Doc) -> Iterator[Doc]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def _render_raw(root: Path) -> list[Doc]:
    kustomization = load_docs(root / "kustomization.yaml")[0]
    allowed = {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "configMapGenerator",
        "patches",
    }
    _check_keys(str(root / "kustomization.yaml"), kustomization, allowed)
    docs: list[Doc] = []
    for name in kustomization.get("resources", []):
        if (root / name).is_dir():
            docs.extend(_render_raw((root / name).resolve()))
        else:
            docs.extend(load_docs(_inside(root, name)))
    for spec in kustomization.get("configMapGenerator", []):
        generated = _generate(root, spec)
        behavior = spec.get("behavior", "create")
        same = [
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == spec["name"]
        ]
        if behavior == "create":
            if same:
                raise ValueError(f"{root}: ConfigMap {spec['name']} generated twice")
            docs.append(generated)
        elif behavior == "merge" and len(same) == 1:
            same[0]["data"] = {**same[0].get("data", {}), **generated["data"]}
        else:
            raise ValueError(f"{root}: no ConfigMap {spec['name']} to {behavior}")
    for entry in kustomization.get("patches", []):
        _check_keys(f"{root} patches", entry, {"path"})
        for patch in load_docs(_inside(root, entry["path"])):
            targets = [
                i
                for i, d in enumerate(docs)
                if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
            ]
            if len(targets) != 1:
                raise ValueError(
                    f"{root}: patch {entry['path']} matches {len(targets)} resources, not 1"
                )
            docs[targets[0]] = _strategic_merge(docs[targets[0]], patch)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _check_keys(f"{root} images", image, {"name", "newName", "newTag"})
        for doc in docs:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    return docs


def kustomize_hash(config_map: Doc) -> str:
    """kustomize's name suffix for a generated ConfigMap (``api/hasher``): SHA-256 of the JSON of
    its kind, name and data, first ten hex digits with 0, 1, 3, a, e mapped to g, h, k, m, t."""
    encoded = json.dumps(
        {"kind": "ConfigMap", "name": config_map["metadata"]["name"], "data": config_map["data"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoding/json escapes these three as well.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def render(root: Path) -> list[Doc]:
    """What ``kubectl kustomize root`` prints, as a list of objects (in no particular order)."""
    docs = _render_raw(root)
    renamed = {}
    for doc in docs:
        annotations = doc["metadata"].get("annotations", {})
        if doc["kind"] == "ConfigMap" and annotations.pop(_GENERATED, None):
            if not annotations:
                del doc["metadata"]["annotations"]
            name = doc["metadata"]["name"]
            renamed[name] = doc["metadata"]["name"] = f"{name}-{kustomize_hash(doc)}"
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]
                ref["name"] = renamed.get(ref["name"], ref["name"])
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
    return docs


def listed_files(root: Path) -> tuple[set[Path], set[Path]]:
    """The files kustomization(s) from ``root`` list: (resources, patches and generator inputs)."""
    kustomization = load_docs(root / "kustomization.yaml")[0]
    resources, others = set(), {root / "kustomization.yaml"}
    for name in kustomization.get("resources", []):
        if (root / name).is_dir():
            more_resources, more_others = listed_files((root / name).resolve())
            resources |= more_resources
            others |= more_others
        else:
            resources.add(root / name)
    for spec in kustomization.get("configMapGenerator", []):
        others |= {root / name for name in spec.get("envs", [])}
        others |= {root / entry.rpartition("=")[2] for entry in spec.get("files", [])}
    others |= {root / entry["path"] for entry in kustomization.get("patches", [])}
    return resources, others


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def settings_config_map(docs: list[Doc]) -> dict[str, str]:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (source,) = container["envFrom"]
    data: dict[str, str] = one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    root: Path = request.param
    return render(root)


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return render(PRODUCTION)


# -- 1. schemas -----------------------------------------------------------------------------------


def _validate(doc: Doc, where: str) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message} (only core kinds are validated; see the docstring)")


def test_every_file_has_a_role() -> None:
    listed = {ROOT / name for name in ROLES}
    for root in KUSTOMIZATIONS:
        resources, others = listed_files(root)
        listed |= resources | others
    present = {p for p in ROOT.rglob("*") if p.is_file()}
    assert {p.resolve() for p in present} == {p.resolve() for p in listed}


@pytest.mark.parametrize(
    "path",
    sorted(
        {p.relative_to(ROOT) for root in KUSTOMIZATIONS for p in listed_files(root)[0]}
        | {Path("overlays/production/secret.example.yaml")}
    ),
    ids=str,
)
def test_each_manifest_file_validates(path: Path) -> None:
    docs = load_docs(ROOT / path)
    assert docs
    for doc in docs:
        _validate(doc, str(path))


def test_each_rendered_object_validates(rendered: list[Doc]) -> None:
    assert len(rendered) >= 7
    for doc in rendered:
        _validate(doc, "rendered")


def test_the_validator_rejects_an_unknown_field() -> None:
    service = one(load_docs(BASE / "service.yaml"), "Service")
    service = _strategic_merge(service, {"spec": {"prots": []}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


# -- 2. kustomizations ----------------------------------------------------------------------------


def test_the_overlay_patches_and_extends_the_base(production: list[Doc]) -> None:
    def unhashed(docs: list[Doc]) -> set[tuple[str, str]]:
        return {(d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in docs}

    assert unhashed(render(BASE)) < unhashed(production)
    assert all(
        d["metadata"].get("namespace") == "phone-agent"
        for d in production
        if d["kind"] != "Namespace"
    )
    assert one(production, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 40
    config = settings_config_map(production)
    assert config["PUBLIC_URL"] == "https://voice.example.com"
    assert config["DRAIN_MODE"] == "handover"  # merged, not replaced
    (container,) = pod_spec(production)["containers"]
    assert container["image"] == "registry.example.com/phone-agent:0.1.0"


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [service.yaml]\ncommonLabels: {a: b}\n"
    )
    shutil.copy(BASE / "service.yaml", tmp_path)
    with pytest.raises(ValueError, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(ValueError, match="does not exist"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [service.yaml]\npatches: [{path: p.yaml}]\n"
    )
    (tmp_path / "p.yaml").write_text("kind: Service\nmetadata: {name: other}\n")
    with pytest.raises(ValueError, match="matches 0 resources"):
        render(tmp_path)


def test_strategic_merge_merges_pod_lists_by_key_and_replaces_the_rest() -> None:
    base = {"containers": [{"name": "a", "image": "x", "args": ["1"]}], "tolerations": [{"k": 1}]}
    patch = {"containers": [{"name": "a", "args": ["2"]}, {"name": "b"}], "tolerations": [{"k": 2}]}
    assert _strategic_merge(base, patch) == {
        "containers": [{"name": "a", "image": "x", "args": ["2"]}, {"name": "b"}],
        "tolerations": [{"k": 2}],
    }


def test_the_hash_suffix_is_kustomizes() -> None:
    # The example of kustomize's documentation (configMapGenerator, literals).
    config_map = {
        "metadata": {"name": "my-java-server-env-vars"},
        "data": {"JAVA_HOME": "/opt/java/jdk", "JAVA_TOOL_OPTIONS": "-agentlib:hprof"},
    }
    assert kustomize_hash(config_map) == "44k658k8gk"


@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kubectl_kustomize_renders_the_same(root: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer's own checks stand alone")
    out = subprocess.run(
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=True
    ).stdout

    def keyed(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
        text = re.sub(r"(phone-agent-config)-[a-z0-9]{10}\b", r"\1-HASH", json.dumps(docs))
        return {(d["kind"], d["metadata"]["name"]): d for d in json.loads(text)}

    assert keyed(render(root)) == keyed(list(yaml.safe_load_all(out)))


# -- 3. consistency with the bridge ---------------------------------------------------------------


def test_the_grace_period_outlasts_prestop_and_the_handover(rendered: list[Doc]) -> None:
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep")
    assert len(command) == 2
    pre_stop = float(command[1])
    config = settings_config_map(rendered)
    mode = config.get("DRAIN_MODE", "handover")
    if mode == "handover":
        timeout = float(config.get("HANDOVER_TIMEOUT_S", "30"))
    else:
        assert mode == "wait"
        timeout = float(config.get("DRAIN_TIMEOUT_S", "600"))
    margin = 10  # the last records written, the process's exit
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + timeout + margin


def test_the_pod_runs_unprivileged_on_a_read_only_root(rendered: list[Doc]) -> None:
    pod = pod_spec(rendered)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int)
    assert context["runAsUser"] > 0
    # The image's own user (infra/Dockerfile) is the same one.
    dockerfile = (ROOT.parent / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M) == [
        (str(context["runAsUser"]), str(context["runAsGroup"]))
    ]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_every_sqlite_file_and_the_agents_are_on_mounted_volumes(rendered: list[Doc]) -> None:
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    writable = [path for path, volume in mounts.items() if "emptyDir" in volume]
    config = settings_config_map(rendered)
    for key in ("DATABASE_URL", "SHARED_STATE_URL", "CRM_DATABASE_URL"):
        url = config.get(key, "")
        if url.startswith("sqlite:///"):
            file = url.removeprefix("sqlite:///")
            assert any(file.startswith(f"{path}/") for path in writable), (key, url)
    assert "CRM_DATABASE_URL" in config  # the default, ./crm.db, is on the read-only root
    agents = mounts[config["AGENTS_PATH"]]
    assert one(rendered, "ConfigMap", agents["configMap"]["name"])


def test_the_probes_and_ports_are_the_bridges(rendered: list[Doc]) -> None:
    pod = pod_spec(rendered)
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [int(settings_config_map(rendered)["PORT"])]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ports
    deployment = one(rendered, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in ports.values()


def test_selectors_service_and_ingress_agree(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    service = one(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    ingress = one(rendered, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in service_ports
    public = urlsplit(settings_config_map(rendered)["PUBLIC_URL"])
    assert public.scheme == "https"
    assert [r["host"] for r in ingress["spec"]["rules"]] == [public.hostname]
    assert [h for t in ingress["spec"]["tls"] for h in t["hosts"]] == [public.hostname]


def test_the_hpa_scales_the_deployment_on_the_bridges_gauge(rendered: list[Doc]) -> None:
    (gauge_metric,) = Metrics(CollectorRegistry()).active_calls.describe()
    gauge = gauge_metric.name
    hpa = one(rendered, "HorizontalPodAutoscaler")
    deployment = one(rendered, "Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == gauge
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 0 < int(metric["pods"]["target"]["averageValue"]) < 40  # ~40 calls fill one core
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_prometheus_adapter_rule_serves_the_hpas_metric(production: list[Doc]) -> None:
    (values,) = load_docs(PRODUCTION / "prometheus-adapter-values.yaml")
    (rule,) = values["rules"]["custom"]
    name = one(production, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"][
        "name"
    ]
    assert rule["seriesQuery"].startswith(name + "{")
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["name"]["as"] == name
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_the_example_secret_has_every_key_the_pods_read(production: list[Doc]) -> None:
    (secret,) = load_docs(PRODUCTION / "secret.example.yaml")
    (container,) = pod_spec(production)["containers"]
    refs = [v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v]
    assert {r["name"] for r in refs} == {secret["metadata"]["name"]}
    assert {r["key"] for r in refs} == set(secret["stringData"])
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())
    assert secret["metadata"]["namespace"] == one(production, "Deployment")["metadata"]["namespace"]
    assert not [d for d in production if d["kind"] == "Secret"]  # never applied with -k


def test_the_bridge_accepts_the_pods_environment(production: list[Doc]) -> None:
    (secret,) = load_docs(PRODUCTION / "secret.example.yaml")
    env = {**settings_config_map(production), **secret["stringData"]}
    settings = Settings.from_env(env)
    settings.check_exposure()  # 0.0.0.0 with TWILIO_AUTH_TOKEN
    assert (settings.host, settings.port, settings.log_format) == ("0.0.0.0", 8080, "json")
    assert settings.shared_state_url == env["DATABASE_URL"]  # replicas share state in PostgreSQL


def test_the_agents_config_map_loads(rendered: list[Doc], tmp_path: Path) -> None:
    volume = next(v for v in pod_spec(rendered)["volumes"] if v["name"] == "agents")
    agents = one(rendered, "ConfigMap", volume["configMap"]["name"])
    for name, text in agents["data"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    registry = load(tmp_path, env={})
    assert registry.default is not None
