"""deploy/k8s/: valid Kubernetes objects (schemas bundled with kubernetes-validate,
nothing fetched) that agree with the worker they run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agents.worker.web import openapi_document
from streams.settings import Settings, load_settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes release still served by the main cloud providers and
# the newest whose schemas the package ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def load_documents() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


DOCUMENTS = load_documents()
OBJECTS = [doc for docs in DOCUMENTS.values() for doc in docs]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in OBJECTS
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def worker_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def setting_names() -> set[str]:
    return {str(field.validation_alias) for field in Settings.model_fields.values()}


def unknown_settings(names: list[str]) -> list[str]:
    """Names that look like settings but that the settings object does not read."""
    known = setting_names()
    return [name for name in names if name.startswith("ENGAGEMENT_") and name not in known]


def worker_environment() -> dict[str, str]:
    """What the worker container sees: the ConfigMap, the Secret, then its own env."""
    env = dict(one("ConfigMap")["data"])
    env.update(one("Secret")["stringData"])
    for item in worker_container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("$(POD_NAME)", "engagement-worker-0")
    return env


def memory_bytes(quantity: str) -> int:
    return int(quantity[:-2]) * MEMORY_UNITS[quantity[-2:]]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", OBJECTS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_a_valid_kubernetes_object(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "breakage",
    ["port_as_word", "unknown_field", "no_selector"],
)
def test_the_validator_rejects_a_broken_statefulset(breakage: str) -> None:
    doc = copy.deepcopy(one("StatefulSet"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    if breakage == "port_as_word":
        container["ports"][0]["containerPort"] = "six-thousand"
    elif breakage == "unknown_field":
        container["livenesProbe"] = container.pop("livenessProbe")
    else:
        del doc["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(DOCUMENTS)


def test_configmap_secret_and_env_hold_only_real_settings() -> None:
    names = [
        *one("ConfigMap")["data"],
        *one("Secret")["stringData"],
        *(item["name"] for item in worker_container()["env"]),
    ]
    assert unknown_settings(names) == []
    # the same check catches a misspelt variable
    assert unknown_settings(["ENGAGEMENT_PARTITONS", "ENGAGEMENT_PARTITIONS", "POD_NAME"]) == [
        "ENGAGEMENT_PARTITONS"
    ]


def test_the_worker_accepts_the_configured_settings() -> None:
    env = worker_environment()
    settings = load_settings(**{k: v for k, v in env.items() if k.startswith("ENGAGEMENT_")})
    settings.require_secrets()  # salts, clock keys and the signing kid are all there
    settings.require_guarded_api()  # bound to every interface, so with a token
    assert settings.store.startswith("rocksdb://")
    mounts = {mount["mountPath"] for mount in worker_container()["volumeMounts"]}
    assert settings.data_dir in mounts
    assert (
        settings.web_advertised_host
        == "engagement-worker-0." + one("StatefulSet")["spec"]["serviceName"]
    )


def test_secret_holds_placeholders_only() -> None:
    values = one("Secret")["stringData"].values()
    assert all("REPLACE" in value for value in values)


def test_probes_ask_the_worker_port_for_real_routes() -> None:
    container = worker_container()
    web_port = load_settings(**one("ConfigMap")["data"]).web_port
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": web_port}
    routes = set(openapi_document()["paths"])
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {probe["path"] for probe in probes.values()} <= routes
    assert {ports.get(probe["port"], probe["port"]) for probe in probes.values()} == {web_port}


def test_scrape_annotations_name_the_metrics_route_and_port() -> None:
    annotations = one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    web_port = load_settings(**one("ConfigMap")["data"]).web_port
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == web_port
    assert annotations["prometheus.io/path"] in openapi_document()["paths"]


def test_services_and_budget_select_the_workers_on_their_port() -> None:
    statefulset = one("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    headless = one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for service in (one("Service", "engagement-worker"), headless):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    budget = one("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_memory_request_fits_under_the_limit() -> None:
    resources = worker_container()["resources"]
    request = memory_bytes(resources["requests"]["memory"])
    limit = memory_bytes(resources["limits"]["memory"])
    assert 0 < request <= limit
