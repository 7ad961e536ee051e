"""The memory formula for a server of several models: the shared terms (runtime, tokenizer
workspace, requests in flight) once, each model's own terms (its weights, its queue of
``max_queue_pairs`` at its ``max_length``) summed (docs/guides/operations.md#several-models).
For one model every figure equals ``rmserve.serving.memory_budget``'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rmserve.serving.memory_budget import (
    REQUEST_BYTES_FACTOR,
    MemoryTooSmall,
    default_inflight_bytes,
    fixed_memory_bytes,
    resolve_inflight_bytes,
    smallest_inflight_bytes,
)


@dataclass(frozen=True)
class ModelFootprint:
    """What one served model adds to the formula."""

    name: str
    model_bytes: int  # its artifact folder's files
    max_length: int


def shared_bytes() -> int:
    """The terms every model shares: runtime and tokenizer workspace."""
    return fixed_memory_bytes(0, 0, 0)


def model_bytes_needed(model: ModelFootprint, max_queue_pairs: int) -> int:
    """One model's own terms: its weights loaded and its queue full."""
    return fixed_memory_bytes(model.model_bytes, max_queue_pairs, model.max_length) - shared_bytes()


def fixed_bytes(models: Sequence[ModelFootprint], max_queue_pairs: int) -> int:
    return shared_bytes() + sum(model_bytes_needed(m, max_queue_pairs) for m in models)


def required_bytes(
    models: Sequence[ModelFootprint], max_inflight_bytes: int, max_queue_pairs: int
) -> int:
    """The bound on the memory of a server of ``models`` with these settings."""
    return fixed_bytes(models, max_queue_pairs) + int(REQUEST_BYTES_FACTOR * max_inflight_bytes)


def resolve_inflight(
    configured: int | None,
    memory_limit: int | None,
    max_message_bytes: int,
    models: Sequence[ModelFootprint],
    max_queue_pairs: int,
) -> int:
    """``max_inflight_bytes`` as set, else the most the memory limit leaves beside the models,
    else the default; ``MemoryTooSmall`` with the figures when one request cannot fit."""
    if len(models) == 1:  # the single-model formula and its message, exactly
        (model,) = models
        return resolve_inflight_bytes(
            configured, memory_limit, max_message_bytes, model.model_bytes, max_queue_pairs,
            model.max_length,
        )  # fmt: skip
    if configured is not None:
        return configured
    if memory_limit is None:
        return default_inflight_bytes(max_message_bytes)
    fixed = fixed_bytes(models, max_queue_pairs)
    derived = max(0, int((memory_limit - fixed) / REQUEST_BYTES_FACTOR))
    smallest = smallest_inflight_bytes(max_message_bytes)
    if derived < smallest:
        needed = required_bytes(models, smallest, max_queue_pairs)
        each = ", ".join(f"{m.name} {m.model_bytes} bytes" for m in models)
        raise MemoryTooSmall(
            f"memory limit {memory_limit} bytes is under the {needed} bytes this server needs "
            f"for its models ({each}), max_queue_pairs={max_queue_pairs} per model and one "
            f"request of max_message_bytes={max_message_bytes} "
            "(docs/guides/operations.md#several-models); raise the limit, serve fewer models "
            "or lower those settings"
        )
    return derived
