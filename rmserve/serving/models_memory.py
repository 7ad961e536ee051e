"""The memory formula for a server of several models: the shared terms (runtime, tokenizer
workspace, requests in flight) once, each model's own terms (its weights, its queue of
``max_queue_pairs`` at its ``max_length``, its engine's activations in host memory:
``rmserve.serving.activations``) summed (docs/guides/operations.md#several-models).
For one model every figure equals ``rmserve.serving.memory_budget``'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rmserve.engine.providers import CUDA
from rmserve.engine.session import LoadedArtifact
from rmserve.serving.activations import engine_activation_bytes, model_shape
from rmserve.serving.memory_budget import (
    REQUEST_BYTES_FACTOR,
    MemoryTooSmall,
    default_inflight_bytes,
    fixed_memory_bytes,
    folder_bytes,
    resolve_inflight_bytes,
    smallest_inflight_bytes,
)


@dataclass(frozen=True)
class ModelFootprint:
    """What one served model adds to the formula."""

    name: str
    model_bytes: int  # its artifact folder's files
    max_length: int
    activations: int = 0  # its engine's at most (``engine_activation_bytes``)
    on_cpu: bool = True  # on CUDA the activations are device memory, not in the host bound

    @property
    def host_activations(self) -> int:
        """The activations the host-memory bound counts."""
        return self.activations if self.on_cpu else 0


def engine_footprint(
    name: str,
    artifact: LoadedArtifact,
    provider: str,
    workers: int,
    max_batch_tokens: int,
    long_batch_workers: int,
) -> ModelFootprint:
    """What a model adds to the formula served on ``provider`` by ``workers`` batches at once
    (``long_batch_workers`` as the setting): its files, queue and activations (from its
    manifest's shape, else estimated from its size)."""
    manifest = artifact.manifest
    model_bytes = folder_bytes(artifact.folder)
    max_length = manifest.preprocessing.max_length
    on_cpu = provider != CUDA
    activations = engine_activation_bytes(
        model_shape(manifest, model_bytes), manifest.dtype, max_length, max_batch_tokens,
        workers, long_batch_workers,
    )  # fmt: skip
    return ModelFootprint(name, model_bytes, max_length, activations, on_cpu)


def shared_bytes() -> int:
    """The terms every model shares: runtime and tokenizer workspace."""
    return fixed_memory_bytes(0, 0, 0)


def model_bytes_needed(model: ModelFootprint, max_queue_pairs: int) -> int:
    """One model's own terms: its weights loaded, its queue full and its engine's activations
    (those in host memory)."""
    return (
        fixed_memory_bytes(
            model.model_bytes, max_queue_pairs, model.max_length, model.host_activations
        )
        - shared_bytes()
    )


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
            model.max_length, model.host_activations,
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
        activations = ", ".join(f"{m.name} {m.host_activations} bytes" for m in models)
        raise MemoryTooSmall(
            f"memory limit {memory_limit} bytes is under the {needed} bytes this server needs "
            f"for its models ({each}), max_queue_pairs={max_queue_pairs} per model, the "
            f"engines' activations ({activations}) and one request of "
            f"max_message_bytes={max_message_bytes} "
            "(docs/guides/operations.md#several-models); raise the limit, serve fewer models "
            "or lower those settings"
        )
    return derived
