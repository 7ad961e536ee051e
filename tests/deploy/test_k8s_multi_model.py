"""The multi-model overlay: every served model is mounted and named in the annotation the memory
limit is sized from, and the limit holds the summed formula, each model with its engine's
activations (docs/guides/operations.md#several-models), with at least the in-flight budget the
CPU variant gives one model."""

from __future__ import annotations

import json

import pytest

from rmserve.serving.activations import DTYPE_BYTES, assumed_shape
from rmserve.serving.memory_budget import resolve_inflight_bytes
from rmserve.serving.models_memory import ModelFootprint, required_bytes, resolve_inflight
from tests.deploy.test_k8s_invariants import _server, _settings
from tests.deploy.test_k8s_memory import host_activations, quantity_bytes, sized_for
from tests.support.k8s_render import VARIANTS, Manifest, find, render

SIZED_FOR_MODELS = "rmserve.dev/sized-for-models"


@pytest.fixture(scope="module")
def multi() -> list[Manifest]:
    return render(VARIANTS["multi-model"])


def footprints(manifests: list[Manifest]) -> list[ModelFootprint]:
    annotations = find(manifests, "Deployment", "rmserve")["metadata"]["annotations"]
    sized = json.loads(annotations[SIZED_FOR_MODELS])
    s = _settings(manifests)
    footprints = []
    for name, m in sized.items():
        shape = assumed_shape(m["bytes"] // DTYPE_BYTES["fp32"])
        activations = host_activations(s, shape, m["max_length"])
        footprints.append(ModelFootprint(name, m["bytes"], m["max_length"], activations))
    return footprints


def limit_of(manifests: list[Manifest]) -> int:
    return quantity_bytes(_server(manifests)["resources"]["limits"]["memory"])


def test_every_served_model_is_mounted_and_sized_for(multi: list[Manifest]) -> None:
    s = _settings(multi)
    assert s.models, "the overlay serves more than the artifact"
    assert [m.name for m in footprints(multi)] == ["default", *s.models]
    mounts = {m["mountPath"] for m in _server(multi)["volumeMounts"]}
    assert {str(s.artifact), *(str(p) for p in s.models.values())} <= mounts
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in find(multi, "Deployment", "rmserve")["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims <= {m["metadata"]["name"] for m in multi if m["kind"] == "PersistentVolumeClaim"}


def test_the_limit_holds_the_summed_formula_with_the_cpu_variants_budget(
    multi: list[Manifest], cpu_manifests: list[Manifest]
) -> None:
    s, models, limit = _settings(multi), footprints(multi), limit_of(multi)
    budget = resolve_inflight(
        s.max_inflight_bytes, limit, s.max_message_bytes, models, s.max_queue_pairs
    )
    assert required_bytes(models, budget, s.max_queue_pairs) <= limit
    assert all(m.activations > 0 for m in models)  # every model's engine counted
    cpu = _settings(cpu_manifests)
    model_bytes, max_length, shape = sized_for(cpu_manifests)
    one_model = resolve_inflight_bytes(
        cpu.max_inflight_bytes, limit_of(cpu_manifests), cpu.max_message_bytes, model_bytes,
        cpu.max_queue_pairs, max_length, host_activations(cpu, shape, max_length),
    )  # fmt: skip
    assert budget >= one_model, (budget >> 20, one_model >> 20)
    # Not by chance: the CPU variant's limit leaves two models less than one model had.
    squeezed = resolve_inflight(
        s.max_inflight_bytes, limit_of(cpu_manifests), s.max_message_bytes, models,
        s.max_queue_pairs,
    )  # fmt: skip
    assert squeezed < one_model
