"""How the engine's CPU threads are split between batches that run at once.

``intra_op_threads`` is the engine's CPU threads in all (0: one per core); ``engine_workers``
batches run at once, each on its own thread with ``intra_op_threads / engine_workers``
onnxruntime threads. On a 2-core CPU two single-threaded batches side by side beat one batch on
two threads (docs/guides/serving.md#engine-workers). On CUDA one batch at a time feeds the device.
"""

from __future__ import annotations

import os

from rmserve.engine.providers import CUDA

AUTO_CPU_WORKERS = 2


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_workers(threads: int, workers: int) -> int:
    return workers or min(AUTO_CPU_WORKERS, threads)


def engine_workers(provider: str, intra_op_threads: int, workers: int) -> int:
    """Batches the engine runs at once: ``workers`` as set, else 1 on CUDA and on a CPU
    ``AUTO_CPU_WORKERS`` (at most one per engine thread)."""
    if provider == CUDA:
        return workers or 1
    return _cpu_workers(intra_op_threads or cpu_cores(), workers)


def threads_per_batch(intra_op_threads: int, workers: int) -> int:
    """onnxruntime intra-op threads for each batch on a CPU: the engine's threads (0: one per
    core) split evenly between the batches that run at once (``workers``, 0: the CPU's auto)."""
    total = intra_op_threads or cpu_cores()
    return max(1, total // _cpu_workers(total, workers))
