"""Bradley–Terry loss and the metrics logged beside it. Always fp32 and ``logsigmoid``:
``log(sigmoid(x))`` underflows and ``log(1 + exp(x))`` overflows.

``label_smoothing`` ε is the "conservative" Bradley–Terry loss of TRL/DPO: each label is
trusted with probability 1 − ε, so a pair's loss is −((1 − ε)·logσ(d) + ε·logσ(−d)) and it
stops pushing the margin at d = log((1 − ε)/ε) instead of forever. ε = 0 runs today's code."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


def log_likelihood(diff: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Per pair: logσ(d), or with ε > 0, (1 − ε)·logσ(d) + ε·logσ(−d)."""
    if label_smoothing == 0.0:
        return F.logsigmoid(diff)
    return (1.0 - label_smoothing) * F.logsigmoid(diff) + label_smoothing * F.logsigmoid(-diff)


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """−mean(logsigmoid(d)) + center_coef · mean((r_w + r_l)²), d = r_w − r_l − margin; with
    ``label_smoothing`` ε > 0 the first term is −mean((1 − ε)·logsigmoid(d) + ε·logsigmoid(−d))."""
    check_label_smoothing(label_smoothing)
    chosen, rejected = chosen.float(), rejected.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.float()
    loss = -log_likelihood(diff, label_smoothing).mean()
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
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """K heads at once: rewards and weights are [B, K], ``margin`` [B]. Head k's loss is
    −mean_i(w_ik · logsigmoid(d)) + center_coef · mean_i(w_ik · (r_w + r_l)²), d = r_w − r_l −
    margin (with ``label_smoothing`` ε > 0, logsigmoid(d) becomes (1 − ε)·logsigmoid(d) +
    ε·logsigmoid(−d)), the mean over the batch's B pairs (integer bootstrap counts as weights
    make it, over an epoch, the loss of the resampled list); the total is the mean over heads."""
    check_label_smoothing(label_smoothing)
    chosen, rejected, weights = chosen.float(), rejected.float(), weights.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.float().unsqueeze(-1)
    per_head = -(weights * log_likelihood(diff, label_smoothing)).mean(dim=0)
    if center_coef > 0.0:
        per_head = per_head + center_coef * (weights * (chosen + rejected) ** 2).mean(dim=0)
    return per_head.mean()
