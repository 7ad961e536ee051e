"""Each variant's memory limit holds the documented bound
(docs/guides/operations.md#the-memory-formula) for its settings and the artifact it says it is
sized for, so the server starts there (a limit too small for the model, the queue, the engine's
activations and one request of max_message_bytes is refused at start-up) and stays in it."""

from __future__ import annotations

import re

import pytest

from rmserve.artifact.manifest import ModelShape
from rmserve.engine.threads import AUTO_CPU_WORKERS
from rmserve.server.settings import ServerSettings
from rmserve.serving.activations import DTYPE_BYTES, assumed_shape, engine_activation_bytes
from rmserve.serving.memory_budget import (
    MemoryTooSmall,
    required_memory_bytes,
    resolve_inflight_bytes,
    smallest_inflight_bytes,
)
from tests.deploy.test_k8s_invariants import _server, _settings
from tests.support.k8s_render import Manifest, find

UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
SIZED_FOR = "rmserve.dev/sized-for-artifact-bytes"
MAX_LENGTH = "rmserve.dev/sized-for-max-length"
MODEL_SHAPE = "rmserve.dev/sized-for-model-shape"  # JSON of a ModelShape; absent: estimated
GIB = 1 << 30


def quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", value)
    assert match, f"memory quantity {value!r} is not one this test reads"
    return int(match[1]) * UNITS[match[2]]


def sized_for(manifests: list[Manifest]) -> tuple[int, int, ModelShape]:
    """The artifact bytes, max_length and model shape a variant is sized for (fp32 weights)."""
    annotations = find(manifests, "Deployment", "rmserve")["metadata"]["annotations"]
    model_bytes, max_length = int(annotations[SIZED_FOR]), int(annotations[MAX_LENGTH])
    shape = annotations.get(MODEL_SHAPE)
    if shape is None:
        return model_bytes, max_length, assumed_shape(model_bytes // DTYPE_BYTES["fp32"])
    return model_bytes, max_length, ModelShape.model_validate_json(shape)


def host_activations(
    s: ServerSettings, shape: ModelShape, max_length: int, provider: str | None = None
) -> int:
    """The activations the bound counts in host memory: none on CUDA; on a CPU (or ``auto``)
    every worker's, with the CPU's default workers where the setting leaves it to the server."""
    provider = provider or s.provider
    if provider == "cuda":
        return 0
    workers = s.engine_workers or AUTO_CPU_WORKERS
    return engine_activation_bytes(
        shape, "fp32", max_length, s.max_batch_tokens, workers, s.long_batch_workers
    )


def test_quantities_are_read() -> None:
    assert quantity_bytes("4Gi") == 4 << 30
    assert quantity_bytes("512Mi") == 512 << 20
    assert quantity_bytes("2G") == 2 * 10**9
    with pytest.raises(AssertionError):
        quantity_bytes("2.5Gi")


def test_memory_limit_holds_the_bound(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    model_bytes, max_length, shape = sized_for(manifests)
    limit = quantity_bytes(_server(manifests)["resources"]["limits"]["memory"])
    s = _settings(manifests)
    activations = host_activations(s, shape, max_length)
    try:
        budget = resolve_inflight_bytes(
            s.max_inflight_bytes, limit, s.max_message_bytes, model_bytes,
            s.max_queue_pairs, max_length, activations,
        )  # fmt: skip
    except MemoryTooSmall as e:
        raise AssertionError(f"{name}: the server would refuse to start: {e}") from None
    assert budget >= smallest_inflight_bytes(s.max_message_bytes), name
    needed = required_memory_bytes(model_bytes, budget, s.max_queue_pairs, max_length, activations)
    assert needed <= limit, f"{name}: needs {needed >> 20} MiB, limit {limit >> 20} MiB"


def test_the_cpu_variant_counts_its_encoders_activations(cpu_manifests: list[Manifest]) -> None:
    """The MiniLM demo (no shape annotation: estimated from its size) on two workers: a few
    hundred MiB of activations, well inside its 4 GiB pod."""
    _, max_length, shape = sized_for(cpu_manifests)
    activations = host_activations(_settings(cpu_manifests), shape, max_length)
    assert 64 << 20 < activations < 1 * GIB


def test_the_long_context_variant_is_sized_for_a_16k_decoder_on_its_gpu(
    long_context_manifests: list[Manifest],
) -> None:
    manifests = long_context_manifests
    model_bytes, max_length, shape = sized_for(manifests)
    s = _settings(manifests)
    assert max_length == 16384 and shape.attention == "fused" and s.provider == "cuda"
    assert (s.engine_workers, s.long_batch_workers, s.truncation) == (2, 1, "refuse")
    limit = quantity_bytes(_server(manifests)["resources"]["limits"]["memory"])
    # 2,048 queued pairs of 16k tokens (512 MiB); the default 16,384 would not fit this limit
    assert required_memory_bytes(model_bytes, smallest_inflight_bytes(s.max_message_bytes),
                                 16384, max_length) > limit  # fmt: skip
    on_gpu = engine_activation_bytes(
        shape, "fp32", max_length, s.max_batch_tokens, 2, s.long_batch_workers
    )
    # linear in length with the fused kernel; with the weights it fits a 24 GB GPU
    assert on_gpu < 16 * GIB


def test_the_long_context_cpu_variant_holds_a_16k_fused_decoder_and_no_eager_one(
    long_context_cpu_manifests: list[Manifest], long_context_manifests: list[Manifest]
) -> None:
    """The same model and serving settings on a CPU: fused attention's activations are linear in
    length and fit the pod; an eager export of the model would hold [heads, 16k, 16k] scores,
    far over any limit, and is refused at start-up."""
    manifests = long_context_cpu_manifests
    model_bytes, max_length, shape = sized_for(manifests)
    s = _settings(manifests)
    assert (max_length, shape) == sized_for(long_context_manifests)[1:]
    assert s.provider == "cpu" and shape.attention == "fused"
    gpu = _settings(long_context_manifests)
    for field in ("engine_workers", "long_batch_workers", "max_batch_tokens", "max_queue_pairs",
                  "max_request_pairs", "truncation", "warmup_budget_seconds"):  # fmt: skip
        assert getattr(s, field) == getattr(gpu, field), field
    activations = host_activations(s, shape, max_length)
    # a Prefer's two 16k pairs + 8,192 tokens, each holding every layer's K/V to the run's end
    assert 12 * GIB < activations < 16 * GIB
    limit = quantity_bytes(_server(manifests)["resources"]["limits"]["memory"])
    budget = resolve_inflight_bytes(None, limit, s.max_message_bytes, model_bytes,
                                    s.max_queue_pairs, max_length, activations)  # fmt: skip
    assert budget >= 4 * s.max_message_bytes  # several requests at the size limit in flight
    eager = shape.model_copy(update={"attention": "materialized"})
    held = host_activations(s, eager, max_length)
    assert held > 100 * GIB
    with pytest.raises(MemoryTooSmall, match="activations"):
        resolve_inflight_bytes(None, limit, s.max_message_bytes, model_bytes,
                               s.max_queue_pairs, max_length, held)  # fmt: skip


def test_a_limit_too_small_for_the_weights_is_caught(
    gpu_manifests: list[Manifest],
) -> None:
    """The check above fails where it should: the GPU variant's 0.6B decoder in a 4 GiB pod."""
    s = _settings(gpu_manifests)
    with pytest.raises(MemoryTooSmall):
        resolve_inflight_bytes(None, 4 << 30, s.max_message_bytes, 2_400_000_000,
                               s.max_queue_pairs, 2048)  # fmt: skip
