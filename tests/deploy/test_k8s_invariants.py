"""What the schemas cannot say about k8s/: the pieces have to fit each other and the server."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from rmserve.server.settings import ServerSettings
from tests.support.dockerfile import stages
from tests.support.k8s_render import (
    K8S,
    PLAIN_MANIFESTS,
    ROOT,
    Manifest,
    adapter_series_for,
    find,
    hpa_metric_name,
    load_yaml_documents,
    pod_spec,
)

GPU = "nvidia.com/gpu"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _server(manifests: list[Manifest]) -> dict[str, Any]:
    containers = pod_spec(find(manifests, "Deployment", "rmserve"))["containers"]
    return dict(next(c for c in containers if c["name"] == "rmserve"))


def _config(manifests: list[Manifest]) -> dict[str, str]:
    return dict(find(manifests, "ConfigMap", "rmserve-config")["data"])


def _settings(manifests: list[Manifest]) -> ServerSettings:
    """The server settings a pod gets from its ConfigMap (validated by the real class)."""
    fields = {k.removeprefix("RMSERVE_").lower(): v for k, v in _config(manifests).items()}
    return ServerSettings(**fields)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    return dict(find(manifests, "Deployment", "rmserve")["spec"]["template"]["metadata"]["labels"])


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_configmap_keys_are_real_server_settings(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    for key in _config(manifests):
        assert key.startswith("RMSERVE_"), key
        assert key.removeprefix("RMSERVE_").lower() in ServerSettings.model_fields, key
    settings = _settings(manifests)  # every value passes the server's own range checks
    assert str(settings.artifact) in {
        m["mountPath"] for m in _server(manifests)["volumeMounts"] if m["name"] == "artifact"
    }


def test_selectors_match_pod_labels(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    pod_labels = _pod_labels(manifests)
    deployment = find(manifests, "Deployment", "rmserve")
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _matches(find(manifests, "Service", "rmserve")["spec"]["selector"], pod_labels)
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rmserve",
    }


def test_service_is_headless_and_its_ports_name_container_ports(
    variant: tuple[str, list[Manifest]],
) -> None:
    _, manifests = variant
    service = find(manifests, "Service", "rmserve")
    assert service["spec"]["clusterIP"] == "None"
    container_ports = _ports(_server(manifests))
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in container_ports, port
        assert port["port"] == container_ports[port["targetPort"]], port


def test_probes_target_the_container_ports(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    server = _server(manifests)
    ports = _ports(server)
    settings = _settings(manifests)
    assert ports["grpc"] == settings.port
    assert ports["metrics"] == settings.metrics_port
    # probes use the plaintext health-only port, which keeps working when TLS is on
    assert ports["health"] == settings.health_port
    for probe in PROBES:
        spec = server[probe]
        assert "grpc" in spec, f"{probe} must be a native gRPC probe"
        assert spec["grpc"]["port"] == ports["health"], probe
    assert server["readinessProbe"]["grpc"]["service"] == "rmserve.v1.RewardService"
    assert server["startupProbe"]["grpc"] == server["readinessProbe"]["grpc"]


def test_startup_probe_covers_model_load(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    startup = _server(manifests)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_grace_period_exceeds_prestop_plus_drain(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    spec = pod_spec(find(manifests, "Deployment", "rmserve"))
    server = _server(manifests)
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = _settings(manifests).grace_seconds
    assert pre_stop >= 5, "endpoints need a few seconds to drop the pod"
    # + a margin: after the drain the server closes gRPC (1 s grace) and the process exits
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + 5
    # a draining pod answers NOT_SERVING; liveness must not kill it before the drain ends
    live = server["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > pre_stop + drain


def test_pods_are_non_root_with_read_only_root(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_user is not None
    spec = pod_spec(find(manifests, "Deployment", "rmserve"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


def test_artifact_comes_from_a_volume_and_settings_from_the_configmap(
    variant: tuple[str, list[Manifest]],
) -> None:
    name, manifests = variant
    spec = pod_spec(find(manifests, "Deployment", "rmserve"))
    server = _server(manifests)
    assert {"configMapRef": {"name": "rmserve-config"}} in server["envFrom"]
    volume = next(v for v in spec["volumes"] if v["name"] == "artifact")
    if name == "artifact-from-image":
        assert "emptyDir" in volume
        init = spec["initContainers"][0]
        assert any(m["name"] == "artifact" for m in init["volumeMounts"])
    else:
        claim = volume["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        find(manifests, "PersistentVolumeClaim", claim["claimName"])


def test_gpu_variant_has_the_gpu_in_limits_only(gpu_manifests: list[Manifest]) -> None:
    resources = _server(gpu_manifests)["resources"]
    assert resources["limits"][GPU] == 1
    assert GPU not in resources["requests"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert _settings(gpu_manifests).provider == "cuda"
    assert find(gpu_manifests, "Deployment")["spec"]["template"]["spec"]["tolerations"]


def test_cpu_variant_has_no_gpu(cpu_manifests: list[Manifest]) -> None:
    assert GPU not in yaml.safe_dump(cpu_manifests)
    resources = _server(cpu_manifests)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    settings = _settings(cpu_manifests)
    assert settings.provider == "cpu"
    assert settings.intra_op_threads == int(resources["requests"]["cpu"])
    assert _server(cpu_manifests)["image"].endswith("-cpu")


def test_servicemonitor_port_exists_on_the_service(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    service = find(manifests, "Service", "rmserve")
    monitor = find(manifests, "ServiceMonitor")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in names


def test_hpa_metric_is_served_by_the_adapter_rule(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    assert adapter_series_for(hpa_metric_name(manifests)) == "rmserve_queue_pairs"


def test_trainer_job_reaches_the_headless_service(gpu_manifests: list[Manifest]) -> None:
    service = find(gpu_manifests, "Service", "rmserve")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    for path in PLAIN_MANIFESTS:
        job = find(load_yaml_documents(path), "Job")
        container = job["spec"]["template"]["spec"]["containers"][0]
        target = container["args"][container["args"].index("--target") + 1]
        expected = f"dns:///{service['metadata']['name']}.$(POD_NAMESPACE).svc.cluster.local"
        assert target == f"{expected}:{grpc_port}"
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def _install_venv(variant: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's install step up to its variant check (``false`` stands in for python,
    so an accepted variant fails at the first pip call instead of building anything)."""
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "install-venv.sh"), str(ROOT), "/nonexistent", variant],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": "false"},
    )


@pytest.mark.parametrize("name", ["gpu", "cpu"])
def test_overlay_images_match_the_dockerfile_variants(name: str) -> None:
    from tests.support.k8s_render import render

    manifests = render(K8S / "overlays" / name)
    assert _server(manifests)["image"].endswith(f"-{name}")
    # the image's variant is a build argument both stages declare, passed to the install step
    for stage in stages():
        args = [rest for word, rest in stage if word == "ARG"]
        assert any(re.fullmatch(r"VARIANT(=\w+)?", a) for a in args), stage
    install = [r for w, r in stages()[0] if w == "RUN" and "docker/install-venv.sh" in r]
    assert len(install) == 1 and install[0].endswith('"${VARIANT}"'), install
    # ... and that step accepts this variant (an unknown one is refused with exit 2)
    accepted = _install_venv(name)
    assert accepted.returncode != 2 and "variant must be" not in accepted.stderr, accepted
    refused = _install_venv(f"{name}-bogus")
    assert refused.returncode == 2 and "variant must be" in refused.stderr, refused


def test_container_env_names_are_real_server_settings(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    for entry in _server(manifests).get("env", []):
        name = entry["name"]
        assert name.startswith("RMSERVE_"), name
        assert name.removeprefix("RMSERVE_").lower() in ServerSettings.model_fields, name
