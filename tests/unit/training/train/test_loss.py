"""Bradley–Terry loss and preference metrics."""

from __future__ import annotations

import math

import pytest
import torch

from rmserve_training.train.loss import bradley_terry_loss, preference_metrics

P_WORKED_EXAMPLE = 0.8175744762  # σ(2.5 − 1.0), the DESIGN.md worked example


def test_worked_example_value() -> None:
    loss = bradley_terry_loss(torch.tensor([2.5]), torch.tensor([1.0]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-math.log(P_WORKED_EXAMPLE), abs=1e-7)
    assert math.exp(-loss.item()) == pytest.approx(P_WORKED_EXAMPLE, abs=1e-7)  # fp32 rounding


def test_gradient_raises_chosen_and_lowers_rejected() -> None:
    chosen = torch.tensor([0.3, -1.0], requires_grad=True)
    rejected = torch.tensor([0.5, 2.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert (chosen.grad < 0).all()  # descending the loss increases r_w
    assert (rejected.grad > 0).all()  # ... and decreases r_l
    assert torch.allclose(chosen.grad, -rejected.grad)


def test_margin_is_subtracted_from_the_difference() -> None:
    with_margin = bradley_terry_loss(torch.tensor([2.5]), torch.tensor([1.0]), torch.tensor([0.5]))
    assert with_margin.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), abs=1e-7)


def test_centring_adds_mean_squared_sum() -> None:
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([1.0, -3.0])
    plain = bradley_terry_loss(chosen, rejected)
    centred = bradley_terry_loss(chosen, rejected, center_coef=0.01)
    assert (centred - plain).item() == pytest.approx(0.01 * (9.0 + 4.0) / 2, abs=1e-6)


def test_extreme_differences_stay_finite() -> None:
    big = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    assert big.item() == pytest.approx(200.0, rel=1e-6)
    assert bradley_terry_loss(torch.tensor([200.0]), torch.tensor([0.0])).item() == 0.0


def test_loss_is_fp32_for_half_inputs() -> None:
    loss = bradley_terry_loss(torch.tensor([1.0], dtype=torch.bfloat16), torch.tensor([0.0]))
    assert loss.dtype == torch.float32


def test_metrics_count_ties_as_wrong() -> None:
    metrics = preference_metrics(
        torch.tensor([1.0, 2.0, 0.5, 3.0]), torch.tensor([0.0, 2.0, 1.0, 1.0])
    )
    assert metrics["accuracy"] == 0.5
    assert metrics["margin"] == pytest.approx((1.0 + 0.0 - 0.5 + 2.0) / 4)
    both = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.0, 2.0, 1.0, 1.0])
    assert metrics["reward_mean"] == pytest.approx(both.mean().item())
    assert metrics["reward_std"] == pytest.approx(both.std(unbiased=False).item())
