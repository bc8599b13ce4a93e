"""The Kubernetes manifests are valid Kubernetes 1.30 objects and say what operations rely on.

Schema validity comes from kubernetes-validate (bundled schemas, offline, `--strict` so a misspelt field
fails) and yamllint, both run from the same virtual environment as the tests.
"""

from __future__ import annotations

# Runs this venv's own validators on this repository's files, with a fixed argv.
import subprocess  # nosec B404
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.config import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "kubernetes"
OBJECT_FILES = sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
BIN = Path(sys.executable).parent
SHUTDOWN_GRACE_ARG = "--shutdown-grace"
OPTIONAL = {"secret.example.yaml", "redis.yaml"}
"""Not applied by the kustomization: the Secret is created out of band, Redis only for shared limits."""


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed in {BIN}: install the dev dependencies (make install)")
    return path


def _objects() -> list[dict[str, Any]]:
    return [doc for path in OBJECT_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in _objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment", "llm-grpc")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    container: dict[str, Any] = _pod_spec()["containers"][0]
    return container


def test_there_are_manifests() -> None:
    assert {p.name for p in OBJECT_FILES} >= {
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "redis.yaml",
    }


@pytest.mark.parametrize("path", OBJECT_FILES, ids=lambda p: p.name)
def test_manifest_passes_strict_kubernetes_1_30_schema(path: Path) -> None:
    result = subprocess.run(  # nosec B603
        [str(_tool("kubernetes-validate")), "--strict", "-k", "1.30.0", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_manifests_pass_yamllint_as_documented_without_naming_a_config() -> None:
    """`yamllint --strict docs/deploy/kubernetes` from the repository root (docs/deploy/kubernetes/
    README.md): yamllint finds the repository's .yamllint by itself."""
    root = MANIFESTS.parents[2]
    result = subprocess.run(  # nosec B603
        [str(_tool("yamllint")), "--strict", "docs/deploy/kubernetes"],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_probes_are_native_grpc_on_the_grpc_port_and_ignore_providers() -> None:
    container = _container()

    assert container["startupProbe"]["grpc"]["port"] == 50051
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "llm.v1.LLMService"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 50051, "metrics": 9464}


def test_pods_outlive_the_prestop_pause_and_the_drain() -> None:
    spec = _pod_spec()
    args = _container()["args"]
    drain = float(args[args.index(SHUTDOWN_GRACE_ARG) + 1])
    pause = _container()["lifecycle"]["preStop"]["sleep"]["seconds"]

    assert drain == 30
    assert 0 < pause < 15
    assert spec["terminationGracePeriodSeconds"] > 30
    assert spec["terminationGracePeriodSeconds"] > drain + pause


def test_pods_run_unprivileged() -> None:
    spec = _pod_spec()
    security = _container()["securityContext"]

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_metrics_are_scraped_from_the_metrics_port() -> None:
    annotations = _one("Deployment", "llm-grpc")["spec"]["template"]["metadata"]["annotations"]
    args = _container()["args"]

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == args[args.index("--metrics-port") + 1] == "9464"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_keys_come_from_the_secret_and_settings_from_the_configmap() -> None:
    sources = _container()["envFrom"]
    secret = _one("Secret", "llm-grpc-keys")
    config = _one("ConfigMap", "llm-grpc-config")

    assert {"secretRef": {"name": "llm-grpc-keys"}} in sources
    assert {"configMapRef": {"name": "llm-grpc-config"}} in sources
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"} <= set(secret["stringData"])
    # Placeholders stay empty: a pod started with them refuses to start instead of running on a known key.
    assert all(value == "" for value in secret["stringData"].values())
    assert not secret.get("data")
    assert {"ALLOWED_MODELS", "LLM_DEFAULT_MODEL", "LLM_REQUEST_TIMEOUT", "LLM_MAX_RETRIES"} <= set(
        config["data"]
    )


def test_every_configured_variable_is_a_setting_the_gateway_reads() -> None:
    known = {name.upper() for name in Settings.model_fields} | {"GEMINI_API_KEY"}
    variables = set(_one("ConfigMap")["data"]) | set(_one("Secret")["stringData"])

    assert variables - known == set()


def test_the_configmap_makes_valid_settings() -> None:
    settings = Settings(**{k.lower(): v for k, v in _one("ConfigMap")["data"].items()})

    assert settings.llm_default_model in settings.allowed_models
    assert settings.llm_log_format == "json"


def test_services_hpa_and_pdb_select_the_deployment() -> None:
    deployment = _one("Deployment", "llm-grpc")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    headless, cluster_ip = _one("Service", "llm-grpc-headless"), _one("Service", "llm-grpc")
    hpa, pdb = _one("HorizontalPodAutoscaler"), _one("PodDisruptionBudget")

    assert headless["spec"]["clusterIP"] == "None"
    assert cluster_ip["spec"].get("type", "ClusterIP") == "ClusterIP"
    for service in (headless, cluster_ip):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {"name": "grpc", "port": 50051, "targetPort": "grpc", "appProtocol": "grpc"} in service[
            "spec"
        ]["ports"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_no_manifest_pins_a_namespace() -> None:
    assert [o["metadata"]["name"] for o in _objects() if "namespace" in o["metadata"]] == []


def test_the_kustomization_lists_every_manifest_but_never_the_example_secret() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]

    assert sorted(listed) == [p.name for p in OBJECT_FILES if p.name not in OPTIONAL]
    assert not any(_is_secret(MANIFESTS / name) for name in listed)


def _is_secret(path: Path) -> bool:
    return any(doc and doc.get("kind") == "Secret" for doc in yaml.safe_load_all(path.read_text()))


def test_the_redis_for_shared_limits_is_reachable_where_the_docs_say() -> None:
    service = _one("Service", "llm-grpc-redis")
    redis = _one("Deployment", "llm-grpc-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]

    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert "noeviction" in container["args"]
    policy = _one("NetworkPolicy", "llm-grpc-redis")
    gateway_labels = _one("Deployment", "llm-grpc")["spec"]["template"]["metadata"]["labels"]
    assert (
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items()
        <= gateway_labels.items()
    )
    assert "redis://llm-grpc-redis:6379/0" in (MANIFESTS.parents[2] / "docs" / "limits.md").read_text()
