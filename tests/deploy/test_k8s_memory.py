"""Each variant's memory limit holds the documented bound
(docs/guides/operations.md#the-memory-formula) for its settings and the artifact it says it is
sized for, so the server starts there (a limit too small for the model, the queue and one request
of max_message_bytes is refused at start-up) and stays in it."""

from __future__ import annotations

import re

import pytest

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


def quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", value)
    assert match, f"memory quantity {value!r} is not one this test reads"
    return int(match[1]) * UNITS[match[2]]


def test_quantities_are_read() -> None:
    assert quantity_bytes("4Gi") == 4 << 30
    assert quantity_bytes("512Mi") == 512 << 20
    assert quantity_bytes("2G") == 2 * 10**9
    with pytest.raises(AssertionError):
        quantity_bytes("2.5Gi")


def test_memory_limit_holds_the_bound(variant: tuple[str, list[Manifest]]) -> None:
    name, manifests = variant
    annotations = find(manifests, "Deployment", "rmserve")["metadata"]["annotations"]
    model_bytes, max_length = int(annotations[SIZED_FOR]), int(annotations[MAX_LENGTH])
    limit = quantity_bytes(_server(manifests)["resources"]["limits"]["memory"])
    s = _settings(manifests)
    try:
        budget = resolve_inflight_bytes(
            s.max_inflight_bytes, limit, s.max_message_bytes, model_bytes,
            s.max_queue_pairs, max_length,
        )  # fmt: skip
    except MemoryTooSmall as e:
        raise AssertionError(f"{name}: the server would refuse to start: {e}") from None
    assert budget >= smallest_inflight_bytes(s.max_message_bytes), name
    needed = required_memory_bytes(model_bytes, budget, s.max_queue_pairs, max_length)
    assert needed <= limit, f"{name}: needs {needed >> 20} MiB, limit {limit >> 20} MiB"


def test_a_limit_too_small_for_the_weights_is_caught(
    gpu_manifests: list[Manifest],
) -> None:
    """The check above fails where it should: the GPU variant's 0.6B decoder in a 4 GiB pod."""
    s = _settings(gpu_manifests)
    with pytest.raises(MemoryTooSmall):
        resolve_inflight_bytes(None, 4 << 30, s.max_message_bytes, 2_400_000_000,
                               s.max_queue_pairs, 2048)  # fmt: skip
