"""Which onnxruntime execution providers a session asks for, and with what options.

``auto`` uses CUDA where it can load and CPU otherwise; an explicit ``cuda`` that cannot load
refuses to start (onnxruntime itself only warns and falls back). Whether CUDA can load is
decided by loading its libraries and asking the CUDA runtime how many devices it sees
(``cuda_libs``), never by letting onnxruntime try.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import onnxruntime as ort

from rmserve.artifact.manifest import ArtifactError
from rmserve.engine.cuda_libs import cuda_device_count, missing_cuda_libraries

log = logging.getLogger(__name__)

ProviderChoice = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ProviderSpec = str | tuple[str, dict[str, str]]


@dataclass(frozen=True)
class CudaHost:
    """What this machine offers the CUDA provider."""

    available: list[str]  # onnxruntime.get_available_providers()
    missing: list[str] = field(default_factory=list)  # libraries that cannot load
    devices: int | None = None  # CUDA devices visible; None when the runtime cannot be asked


def probe_cuda_host() -> CudaHost:
    available = ort.get_available_providers()
    if CUDA not in available:
        return CudaHost(available)
    missing = missing_cuda_libraries()
    return CudaHost(available, missing, None if missing else cuda_device_count())


def cuda_options(device_id: int) -> dict[str, str]:
    """CUDA provider options (onnxruntime's CUDA execution provider documentation)."""
    return {
        "device_id": str(device_id),
        # Grow the memory arena by what a run asks for, not to the next power of two (the
        # default, which can reserve up to twice the largest batch). Warm-up runs the largest
        # batch shape first, so later, smaller batches are carved out of that first block.
        "arena_extend_strategy": "kSameAsRequested",
        # The default, EXHAUSTIVE, benchmarks every cuDNN convolution algorithm on each new
        # input shape, so a batch of a length never seen before would stall while it searches.
        # Transformer reward models have no convolutions; a graph that does gets heuristics.
        "cudnn_conv_algo_search": "HEURISTIC",
        # TF32 (onnxruntime's default on Ampere and later) keeps 10 mantissa bits in fp32
        # MatMuls: an fp32 artifact computes in fp32; fp16 artifacts are the fast choice.
        "use_tf32": "0",
        # Copies on the compute stream (the default; 0 can race, onnxruntime issue #4829).
        "do_copy_in_default_stream": "1",
    }


def providers_for(
    choice: ProviderChoice,
    gpu_device_id: int = 0,
    probe: Callable[[], CudaHost] = probe_cuda_host,
) -> list[ProviderSpec]:
    """The ``providers`` list for ``onnxruntime.InferenceSession``; raises ``ArtifactError``
    when ``cuda`` is asked for and cannot run, or when ``gpu_device_id`` names no device."""
    if choice == "cpu":
        return [CPU]
    host = probe()
    if CUDA not in host.available:
        if choice == "cuda":
            raise ArtifactError(
                f"provider 'cuda' requested but onnxruntime offers only {host.available} "
                "(install rmserve[cuda] and onnxruntime-gpu, or use --provider auto/cpu)"
            )
        return [CPU]
    reason = f"{', '.join(host.missing)} not found" if host.missing else None
    if reason is None and host.devices == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        reason = "no CUDA device visible" + (
            f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        )
    if reason is not None:
        if choice == "cuda":
            raise ArtifactError(
                f"provider 'cuda' requested but CUDA cannot load ({reason}; install rmserve[cuda] "
                "and an NVIDIA driver, or use --provider auto/cpu)"
            )
        log.info("CUDA not available (%s); using CPU", reason)
        return [CPU]
    if host.devices is not None and gpu_device_id >= host.devices:
        raise ArtifactError(
            f"gpu_device_id {gpu_device_id} names no device: {host.devices} CUDA device(s) "
            f"visible (0..{host.devices - 1}; indices count after CUDA_VISIBLE_DEVICES)"
        )
    return [(CUDA, cuda_options(gpu_device_id)), CPU]
