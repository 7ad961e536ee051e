"""`kubernetes-validate --strict` on every manifest under k8s/, rendered as users apply them.

Built-in kinds are validated against the Kubernetes OpenAPI schemas that kubernetes-validate
ships (strict: unknown fields are errors). prometheus-operator's CRDs (ServiceMonitor,
PrometheusRule) are not in those schemas, so they are validated against their own schema:
cloudcoil's pydantic models generated from the prometheus-operator CRDs, strictly (a field the
model does not know, which pydantic would silently drop, is an error too).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

from tests.support.k8s_render import K8S, PLAIN_MANIFESTS, Manifest, load_yaml_documents

KUBERNETES_VERSION = "1.33.0"  # oldest version still supported upstream when this was written
CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring_v1.PrometheusRule,
}
NOT_MANIFESTS = {"kustomization.yaml"}  # patches (*.patch.yaml) and Helm values are not either


def _dropped_fields(original: Any, dumped: Any, path: str = "") -> list[str]:
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [path or "/"]
        return [
            p
            for key, value in original.items()
            for p in (
                [f"{path}/{key}"]
                if key not in dumped
                else _dropped_fields(value, dumped[key], f"{path}/{key}")
            )
        ]
    if isinstance(original, list):
        if not isinstance(dumped, list) or len(dumped) != len(original):
            return [path]
        return [
            p for i, v in enumerate(original) for p in _dropped_fields(v, dumped[i], f"{path}/{i}")
        ]
    return []


def validate(manifest: Manifest) -> None:
    model = CRD_MODELS.get((manifest["apiVersion"], manifest["kind"]))
    if model is None:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    parsed = model.model_validate(manifest)
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    dropped = _dropped_fields(manifest, dumped)
    assert not dropped, f"{manifest['kind']}: fields unknown to the CRD schema: {dropped}"


def _manifest_files() -> list[str]:
    files = sorted(K8S.rglob("*.yaml"))
    return [
        str(p.relative_to(K8S))
        for p in files
        if p.name not in NOT_MANIFESTS
        and not p.name.endswith(".patch.yaml")
        and "monitoring" not in p.parts  # Helm values for prometheus-adapter, not a manifest
    ]


def test_every_plain_manifest_file_is_found() -> None:
    files = _manifest_files()
    assert "base/deployment.yaml" in files
    assert "examples/rl-trainer-job.yaml" in files
    assert "examples/distributed-training/training-job.yaml" in files
    assert all(str(p.relative_to(K8S)) in files for p in PLAIN_MANIFESTS)


@pytest.mark.parametrize("relative", _manifest_files())
def test_manifest_file_validates_strictly(relative: str) -> None:
    documents = load_yaml_documents(K8S / relative)
    assert documents, f"{relative} holds no manifest"
    for manifest in documents:
        validate(manifest)


def test_rendered_variant_validates_strictly(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    kinds = sorted(m["kind"] for m in manifests)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        kinds
    ), f"{name}: {kinds}"
    for manifest in manifests:
        validate(manifest)


def test_strict_validation_rejects_unknown_fields(gpu_manifests: list[Manifest]) -> None:
    deployment = copy.deepcopy(next(m for m in gpu_manifests if m["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(next(m for m in gpu_manifests if m["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "15s"
    with pytest.raises(AssertionError, match="scrapeIntervall"):
        validate(monitor)
