"""The memory formula of several models: one model's figures are the single-model formula's,
each further model adds its own weights and queue, and a limit too small names every model."""

from __future__ import annotations

import pytest

from rmserve.serving.memory_budget import (
    MIB,
    MemoryTooSmall,
    inflight_bytes_for,
    required_memory_bytes,
    resolve_inflight_bytes,
)
from rmserve.serving.models_memory import (
    ModelFootprint,
    model_bytes_needed,
    required_bytes,
    resolve_inflight,
)


@pytest.mark.parametrize(
    ("model_bytes", "max_length", "queue"),
    [(90_000_000, 512, 16384), (2_400_000_000, 2048, 4096), (0, 8, 1)],
)
def test_one_model_is_the_single_model_formula(
    model_bytes: int, max_length: int, queue: int
) -> None:
    model = ModelFootprint("m", model_bytes, max_length)
    assert required_bytes([model], 64 * MIB, queue) == required_memory_bytes(
        model_bytes, 64 * MIB, queue, max_length
    )
    limit = required_memory_bytes(model_bytes, 300 * MIB, queue, max_length)
    assert (
        resolve_inflight(None, limit, 64 * MIB, [model], queue)
        == resolve_inflight_bytes(None, limit, 64 * MIB, model_bytes, queue, max_length)
        == inflight_bytes_for(limit, model_bytes, queue, max_length)
    )


def test_each_model_adds_its_weights_and_queue_once() -> None:
    helpful = ModelFootprint("helpful", 90_000_000, 512)
    safe = ModelFootprint("safe", 400_000_000, 1024)
    both = required_bytes([helpful, safe], 64 * MIB, 16384)
    assert both == required_bytes([helpful], 64 * MIB, 16384) + model_bytes_needed(safe, 16384)
    assert model_bytes_needed(safe, 16384) == 2 * 400_000_000 + 16384 * (1024 * 16 + 512)
    assert resolve_inflight(7 * MIB, 1, 4 * MIB, [helpful, safe], 16384) == 7 * MIB  # as set


def test_a_limit_too_small_for_the_models_names_them() -> None:
    models = [ModelFootprint("helpful", 90_000_000, 512), ModelFootprint("safe", 400_000_000, 512)]
    limit = required_bytes(models[:1], 64 * MIB, 1024) + 64 * MIB
    with pytest.raises(MemoryTooSmall) as info:
        resolve_inflight(None, limit, 64 * MIB, models, 1024)
    message = str(info.value)
    assert f"memory limit {limit} bytes" in message
    assert "helpful 90000000 bytes, safe 400000000 bytes" in message
    assert resolve_inflight(None, limit, 64 * MIB, models[:1], 1024) >= 65 * MIB


def test_each_model_adds_its_activations_where_they_live_in_host_memory() -> None:
    on_cpu = ModelFootprint("helpful", 90_000_000, 512, activations=300 * MIB)
    on_gpu = ModelFootprint("safe", 90_000_000, 512, activations=300 * MIB, on_cpu=False)
    bare = ModelFootprint("bare", 90_000_000, 512)
    assert model_bytes_needed(on_cpu, 1024) == model_bytes_needed(bare, 1024) + 300 * MIB
    assert model_bytes_needed(on_gpu, 1024) == model_bytes_needed(bare, 1024)  # device memory
    assert required_bytes([on_cpu], 64 * MIB, 1024) == required_memory_bytes(
        90_000_000, 64 * MIB, 1024, 512, 300 * MIB
    )
    limit = required_bytes([on_cpu, bare], 64 * MIB, 1024)
    with pytest.raises(MemoryTooSmall, match=r"activations \(helpful 314572800 bytes, bare 0"):
        resolve_inflight(None, limit - 60 * MIB, 64 * MIB, [on_cpu, bare], 1024)
