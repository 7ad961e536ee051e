"""The distributed training example (k8s/examples/distributed-training/): torchrun on every pod
of an Indexed Job meets at a rendezvous the headless Service resolves, with real `rmserve train`
flags, a GPU per process and the artifact on the shared volume. Its schema is checked with
every other manifest in test_k8s_schemas.py."""

from __future__ import annotations

import argparse
from pathlib import PurePosixPath
from typing import Any

import pytest

from rmserve.cli_args import settings_from_args
from tests.support.k8s_render import TRAINING_JOB, Manifest, find, load_yaml_documents

GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return load_yaml_documents(TRAINING_JOB)


def _container(manifests: list[Manifest]) -> dict[str, Any]:
    (container,) = find(manifests, "Job")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _torchrun_options(container: dict[str, Any]) -> dict[str, str]:
    """``--key=value`` options given to torchrun itself (before ``-m``)."""
    args = container["args"]
    return dict(a.removeprefix("--").split("=", 1) for a in args[: args.index("-m")])


def _train_args(container: dict[str, Any]) -> list[str]:
    args: list[str] = container["args"]
    at = args.index("-m")
    assert args[at + 1 : at + 3] == ["rmserve", "train"], args
    return args[at + 3 :]


def test_torchrun_runs_rmserve_train_with_real_flags(manifests: list[Manifest]) -> None:
    from rmserve_training import commands
    from rmserve_training.settings import TrainSettings

    container = _container(manifests)
    assert container["command"] == ["torchrun"]
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *_train_args(container)])
    settings = settings_from_args(TrainSettings, args)  # every value passes the real checks
    assert settings.strategy == "fsdp"
    assert settings.resume and settings.checkpoint_every > 0  # a recreated pod resumes
    shared = next(m for m in container["volumeMounts"] if m["name"] == "shared")["mountPath"]
    for path in (settings.out, settings.work_dir, settings.train_data, settings.eval_data):
        assert PurePosixPath(str(path)).is_relative_to(shared), path


def test_rendezvous_is_pod_zero_through_the_headless_service(manifests: list[Manifest]) -> None:
    job = find(manifests, "Job")
    service = find(manifests, "Service")
    options = _torchrun_options(_container(manifests))
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    selector = service["spec"]["selector"]
    assert selector and all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in _container(manifests)["ports"]}
    assert container_ports[port["targetPort"]] == port["port"]
    host = f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert options["rdzv-endpoint"] == f"{host}:{port['port']}"
    assert options["rdzv-backend"] == "c10d"
    assert options["rdzv-id"]


def test_one_pod_per_node_and_one_gpu_per_process(manifests: list[Manifest]) -> None:
    spec = find(manifests, "Job")["spec"]
    container = _container(manifests)
    options = _torchrun_options(container)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(options["nnodes"])
    resources = container["resources"]
    assert resources["limits"][GPU] == int(options["nproc-per-node"])
    assert GPU not in resources["requests"]
    assert spec["template"]["spec"]["tolerations"]


def test_volumes_shared_claim_and_shared_memory(manifests: list[Manifest]) -> None:
    pod = find(manifests, "Job")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim_name = volumes["shared"]["persistentVolumeClaim"]["claimName"]
    claim = find(manifests, "PersistentVolumeClaim", claim_name)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it
    mounts = {m["mountPath"]: m["name"] for m in _container(manifests)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    context = _container(manifests)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the only writable scratch besides /shared
    assert pod["securityContext"]["runAsNonRoot"] is True
