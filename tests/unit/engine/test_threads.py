"""How the engine's threads are split between batches that run at once."""

from __future__ import annotations

import pytest

from rmserve.engine.providers import CPU, CUDA
from rmserve.engine.threads import AUTO_CPU_WORKERS, cpu_cores, engine_workers, threads_per_batch


@pytest.mark.parametrize(
    ("intra_op_threads", "workers", "expected_workers", "expected_threads"),
    [
        (2, 0, 2, 1),  # a 2-core budget: two single-threaded batches side by side
        (8, 0, AUTO_CPU_WORKERS, 8 // AUTO_CPU_WORKERS),
        (1, 0, 1, 1),  # one thread: one batch at a time, as before workers
        (2, 1, 1, 2),  # one worker keeps every thread for its batch
        (8, 3, 3, 2),  # split evenly, rounded down
        (2, 4, 4, 1),  # more workers than threads: one thread each
    ],
)
def test_cpu_split(
    intra_op_threads: int, workers: int, expected_workers: int, expected_threads: int
) -> None:
    assert engine_workers(CPU, intra_op_threads, workers) == expected_workers
    assert threads_per_batch(intra_op_threads, workers) == expected_threads


def test_zero_threads_means_every_core() -> None:
    cores = cpu_cores()
    workers = min(AUTO_CPU_WORKERS, cores)
    assert engine_workers(CPU, 0, 0) == workers
    assert threads_per_batch(0, 0) == max(1, cores // workers)


def test_cuda_runs_one_batch_at_a_time_unless_told() -> None:
    assert engine_workers(CUDA, 8, 0) == 1
    assert engine_workers(CUDA, 8, 2) == 2
