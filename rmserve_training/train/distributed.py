"""torch.distributed for ``rmserve train`` under torchrun: who this process is (rank, world size,
device), the model wrapped for the chosen strategy (DDP or FSDP2 ``fully_shard``), gradient
sync control for accumulation, and the few collectives the loop needs.

Launched without torchrun (no ``RANK`` / ``WORLD_SIZE`` in the environment), training is one
process and nothing here starts a process group."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rmserve_training.model.reward_model import RewardModel

log = logging.getLogger(__name__)

Strategy = Literal["ddp", "fsdp"]
# Another rank's RNG stream starts from seed + rank * this (rank 0 keeps the 1-process stream).
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job. ``distributed`` is False for a plain single process."""

    rank: int
    world_size: int
    device: torch.device
    strategy: Strategy
    distributed: bool

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics.jsonl, the artifact and the summary."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.distributed and self.strategy == "fsdp"

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a no-op for one process); ``tensor`` stays on its own device."""
        if not self.distributed:
            return tensor
        moved = tensor.to(self.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def seed_rank_rng(self, seed: int, step: int) -> None:
        """Ranks > 0 draw dropout masks from their own stream; rank 0 keeps the stream a
        1-process run (and a checkpoint) has, so one process resumes it exactly."""
        if self.rank > 0:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank + step)


def single_process(strategy: Strategy = "ddp") -> Cluster:
    return Cluster(0, 1, torch.device("cpu"), strategy, distributed=False)


def launched_by_torchrun(environ: Mapping[str, str]) -> bool:
    return "RANK" in environ and "WORLD_SIZE" in environ


def join_cluster(strategy: Strategy, environ: Mapping[str, str] | None = None) -> Cluster:
    """Initialise torch.distributed from torchrun's environment (NCCL on CUDA, gloo on CPU);
    a single process when not launched by torchrun."""
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return single_process(strategy)
    local_rank = int(environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    cluster = Cluster(dist.get_rank(), dist.get_world_size(), device, strategy, distributed=True)
    log.info(
        "rank %d of %d on %s (%s, %s)", cluster.rank, cluster.world_size, device, backend, strategy
    )
    return cluster


@contextlib.contextmanager
def cluster_session(strategy: Strategy) -> Iterator[Cluster]:
    """``join_cluster``, and the process group torn down at the end. Ranks > 0 finish while
    rank 0 exports: no collective waits on the export, however long it takes."""
    cluster = join_cluster(strategy)
    try:
        yield cluster
    finally:
        if cluster.distributed and dist.is_initialized():
            dist.destroy_process_group()


class RewardDDP(DistributedDataParallel):
    """DDP that still answers ``input_names`` like the reward model it wraps."""

    @property
    def input_names(self) -> list[str]:
        names: list[str] = self.module.input_names
        return names


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer layers (every element of every ``nn.ModuleList``): FSDP units."""
    return [block for m in model.modules() if isinstance(m, nn.ModuleList) for block in m]


def wrap(model: RewardModel, cluster: Cluster) -> RewardModel | RewardDDP:
    """The module the training step runs: ``model`` itself (one process), a DDP replica, or
    ``model`` fully sharded in place (FSDP2: each transformer layer, then the root)."""
    model.to(cluster.device)
    if not cluster.distributed:
        return model
    if cluster.strategy == "ddp":
        device_ids = [cluster.device.index] if cluster.device.type == "cuda" else None
        # find_unused_parameters: BERT's pooler (and frozen or unused heads) get no gradient.
        return RewardDDP(model, device_ids=device_ids, find_unused_parameters=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # The reward model returns rewards.squeeze(-1), a view; nothing modifies it in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(cluster.device.type, (cluster.world_size,))
    for block in repeated_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def gradient_sync(engine: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Accumulating micro-batches: reduce gradients across ranks on the last backward only."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(engine, DistributedDataParallel) and not enabled:
        return engine.no_sync()
    if isinstance(engine, FSDPModule):
        engine.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def clip_gradients(engine: nn.Module, max_norm: float) -> float:
    """Global L2 norm over all parameters (sharded ones included), clipped to ``max_norm``."""
    norm = torch.nn.utils.clip_grad_norm_(engine.parameters(), max_norm)
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)
