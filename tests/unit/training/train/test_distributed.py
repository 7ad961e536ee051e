"""Which rank runs which pairs, and which checkpoints a run may resume: pure pieces of the
torchrun training path (the runs themselves: tests/integration/test_train_distributed.py)."""

from __future__ import annotations

import pytest
import torch

from rmserve_training.train.distributed import Cluster, join_cluster
from rmserve_training.train.sharding import resume_layout_error
from rmserve_training.train.steps import rank_share


def _cluster(rank: int, world_size: int) -> Cluster:
    return Cluster(rank, world_size, torch.device("cpu"), "ddp", distributed=True)


@pytest.mark.parametrize("batches", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_micro_batch_runs_on_exactly_one_rank(batches: int, world_size: int) -> None:
    group = [[2 * i, 2 * i + 1] for i in range(batches)]
    shares = [rank_share(group, _cluster(r, world_size)) for r in range(world_size)]
    assert sorted(b for mine, _ in shares for b in mine) == group
    passes = {p for _, p in shares}
    assert len(passes) == 1  # every rank makes the same number of passes (collectives line up)
    assert passes.pop() == max(len(mine) for mine, _ in shares)


def test_rank_takes_every_world_size_th_micro_batch() -> None:
    group = [[0], [1], [2]]
    assert rank_share(group, _cluster(0, 2)) == ([[0], [2]], 2)
    assert rank_share(group, _cluster(1, 2)) == ([[1]], 2)  # one zero-weighted pass


def _checkpoint(batch_size: int, grad_accum: int, world_size: int | None) -> dict[str, object]:
    state: dict[str, object] = {"settings": {"batch_size": batch_size, "grad_accum": grad_accum}}
    if world_size is not None:
        state["world_size"] = world_size
    return state


def test_resume_accepts_the_same_global_batch_on_another_world_size() -> None:
    assert resume_layout_error(_checkpoint(8, 1, 2), 8, 2, 1) is None
    assert resume_layout_error(_checkpoint(8, 2, 1), 8, 1, 2) is None
    assert resume_layout_error(_checkpoint(8, 4, None), 8, 4, 1) is None  # before torchrun


def test_resume_refuses_a_different_layout_naming_the_fix() -> None:
    error = resume_layout_error(_checkpoint(8, 1, 2), 8, 1, 1)
    assert error is not None and "use --grad-accum 2 on 1 process" in error
    error = resume_layout_error(_checkpoint(8, 1, 3), 8, 1, 2)
    assert error is not None and "no --grad-accum on 2 process(es) gives 3" in error
    error = resume_layout_error(_checkpoint(8, 1, 1), 4, 2, 1)
    assert error is not None and "--batch-size 4 differs from the checkpoint's 8" in error


def test_without_torchrun_training_is_one_process() -> None:
    cluster = join_cluster("fsdp", environ={})
    assert (cluster.rank, cluster.world_size, cluster.distributed) == (0, 1, False)
    assert cluster.is_main and not cluster.sharded
