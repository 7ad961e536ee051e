"""Bradley–Terry loss and the metrics logged beside it. Always fp32 and ``logsigmoid``:
``log(sigmoid(x))`` underflows and ``log(1 + exp(x))`` overflows."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """−mean(logsigmoid(r_w − r_l − margin)) + center_coef · mean((r_w + r_l)²)."""
    chosen, rejected = chosen.float(), rejected.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.float()
    loss = -F.logsigmoid(diff).mean()
    if center_coef > 0.0:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Accuracy (a tie counts as wrong), mean margin r_w − r_l, reward mean/std over both sides."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    both = torch.cat([chosen, rejected])
    return {
        "accuracy": (chosen > rejected).double().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "reward_mean": both.mean().item(),
        "reward_std": both.std(unbiased=False).item(),
    }


def weighted_bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    weights: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """K heads at once: rewards and weights are [B, K], ``margin`` [B]. Head k's loss is
    −mean_i(w_ik · logsigmoid(r_w − r_l − margin)) + center_coef · mean_i(w_ik · (r_w + r_l)²),
    the mean over the batch's B pairs (integer bootstrap counts as weights make it, over an
    epoch, the loss of the resampled list); the total is the mean over heads."""
    chosen, rejected, weights = chosen.float(), rejected.float(), weights.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.float().unsqueeze(-1)
    per_head = -(weights * F.logsigmoid(diff)).mean(dim=0)
    if center_coef > 0.0:
        per_head = per_head + center_coef * (weights * (chosen + rejected) ** 2).mean(dim=0)
    return per_head.mean()
