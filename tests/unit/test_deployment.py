"""The Kubernetes manifests say what operations rely on (schema validity is checked in `make lint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "kubernetes"


def _container() -> dict[str, Any]:
    deployment = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_probes_ask_the_grpc_health_service_not_the_providers() -> None:
    container = _container()

    assert container["livenessProbe"]["grpc"] == {"port": 50051}
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "llm.v1.LLMService"}
    assert container["startupProbe"]["grpc"]["port"] == 50051


def test_pods_outlive_the_drain_and_run_unprivileged() -> None:
    spec = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    container = spec["containers"][0]
    drain = int(container["args"][container["args"].index("--shutdown-grace") + 1])

    assert (
        spec["terminationGracePeriodSeconds"] > drain + container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_keys_come_from_a_secret_and_settings_from_a_configmap() -> None:
    sources = _container()["envFrom"]

    assert {"secretRef": {"name": "llm-grpc-keys"}} in sources
    assert {"configMapRef": {"name": "llm-grpc-config"}} in sources


def test_every_manifest_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])

    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
