"""One optimiser step and one evaluation, for one process or many.

A step consumes a group of micro-batches (``grad_accum`` × world size of them, fewer at the
end of an epoch). Rank r takes micro-batches r, r + W, r + 2W, ... of the group, so a pair (its
chosen and rejected sequence together) is always on exactly one rank, and the group is the
same whatever W is: 2 ranks × 1 micro-batch run the pairs 1 rank × 2 accumulated micro-batches
run. Each micro-batch's loss is weighted by its share of the group's pairs (× W, since DDP and
FSDP average gradients over ranks), so the gradient is the mean over the whole global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rmserve_training.train.distributed import Cluster, clip_gradients, gradient_sync
from rmserve_training.train.loss import bradley_terry_loss, preference_metrics

# Rewards of (chosen, rejected) for the pairs at these indices, one forward pass.
Score = Callable[[Sequence[int]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StepResult:
    """Over the whole global batch (every rank's pairs)."""

    loss: float
    accuracy: float
    grad_norm: float


def rank_share(
    batches: Sequence[Sequence[int]], cluster: Cluster
) -> tuple[list[Sequence[int]], int]:
    """This rank's batches (round robin) and how many passes every rank runs: ranks left
    without a batch run zero-weighted passes so that every rank makes the same collectives."""
    return list(batches[cluster.rank :: cluster.world_size]), math.ceil(
        len(batches) / cluster.world_size
    )


def train_step(
    engine: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    group: Sequence[Sequence[int]],
    score: Score,
    margins: torch.Tensor,
    center_coef: float,
    label_smoothing: float,
    max_grad_norm: float,
    cluster: Cluster,
) -> StepResult:
    """``loss`` is the training loss (label smoothing included, if any)."""
    pairs_in_step = sum(len(b) for b in group)
    mine, passes = rank_share(group, cluster)
    totals = torch.zeros(3, dtype=torch.float64)  # sum of loss x pairs, correct, pairs
    for i in range(passes):
        real = i < len(mine)
        index = mine[i] if real else group[0]
        weight = len(index) * cluster.world_size / pairs_in_step if real else 0.0
        with gradient_sync(engine, enabled=i == passes - 1):
            chosen, rejected = score(index)
            loss = bradley_terry_loss(
                chosen,
                rejected,
                margins[list(index)].to(chosen.device),
                center_coef,
                label_smoothing=label_smoothing,
            )
            (loss * weight).backward()  # type: ignore[no-untyped-call]
        if real:
            correct = (chosen.detach() > rejected.detach()).sum().item()
            totals += torch.tensor([loss.item() * len(index), correct, len(index)])
    grad_norm = clip_gradients(engine, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, pairs = cluster.all_reduce_sum(totals).tolist()
    return StepResult(loss=loss_sum / pairs, accuracy=correct / pairs, grad_norm=grad_norm)


def evaluate_sharded(
    score: Score,
    lengths: Sequence[int],
    margins: torch.Tensor,
    batch_size: int,
    center_coef: float,
    cluster: Cluster,
) -> tuple[dict[str, float], torch.Tensor]:
    """Eval under no_grad with the pairs spread over the ranks; every rank gets the metrics
    of the whole set and every eval response's reward (chosen then rejected). The batches are
    the ones one process would run (sorted by length), so the rewards are the same. The loss
    is plain Bradley–Terry (no label smoothing), comparable across runs."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    mine, passes = rank_share(batches, cluster)
    chosen = torch.zeros(len(lengths))
    rejected = torch.zeros(len(lengths))
    with torch.no_grad():
        for i in range(passes):
            if i < len(mine):
                w, r = score(mine[i])
                chosen[list(mine[i])], rejected[list(mine[i])] = w.cpu(), r.cpu()
            else:  # a sharded model gathers its weights in forward: every rank must run it
                score(batches[0])
    chosen, rejected = cluster.all_reduce_sum(chosen), cluster.all_reduce_sum(rejected)
    loss = bradley_terry_loss(chosen, rejected, margins, center_coef)
    metrics = {"loss": loss.item(), **preference_metrics(chosen, rejected)}
    return metrics, torch.cat([chosen, rejected])
