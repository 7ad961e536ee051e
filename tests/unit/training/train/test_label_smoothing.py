"""Label smoothing ("conservative" Bradley–Terry, TRL/DPO's ``label_smoothing``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rmserve_training.train.loss import bradley_terry_loss, weighted_bradley_terry_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def smoothed(d: float, eps: float) -> float:
    return -((1 - eps) * log_sigmoid(d) + eps * log_sigmoid(-d))


def random_rewards(n: int, heads: int | None = None) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    shape = (n,) if heads is None else (n, heads)
    return (
        torch.randn(shape, generator=generator) * 3,
        torch.randn(shape, generator=generator) * 3,
        torch.rand(n, generator=generator),
    )


def test_zero_is_bit_for_bit_the_plain_formula() -> None:
    chosen, rejected, margin = random_rewards(64)
    old = -F.logsigmoid(chosen - rejected - margin).mean()
    assert torch.equal(bradley_terry_loss(chosen, rejected, margin, label_smoothing=0.0), old)
    assert torch.equal(bradley_terry_loss(chosen, rejected, margin), old)


def test_zero_is_bit_for_bit_the_plain_weighted_formula() -> None:
    chosen, rejected, margin = random_rewards(16, heads=3)
    weights = torch.randint(0, 3, (16, 3)).float()
    diff = chosen - rejected - margin.unsqueeze(-1)
    old = (-(weights * F.logsigmoid(diff)).mean(dim=0)).mean()
    got = weighted_bradley_terry_loss(chosen, rejected, weights, margin, label_smoothing=0.0)
    assert torch.equal(got, old)


def test_hand_computed_value_with_a_margin() -> None:
    # d = 3.0 - 1.0 - 0.5 = 1.5
    loss = bradley_terry_loss(
        torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.5]), label_smoothing=0.1
    )
    assert loss.dtype == torch.float32
    expected = -(0.9 * log_sigmoid(1.5) + 0.1 * log_sigmoid(-1.5))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    plain = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.5]))
    assert loss.item() > plain.item()  # a right, confident pair now costs more


def test_centring_adds_on_top_of_the_smoothed_term() -> None:
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([1.0, -3.0])
    loss = bradley_terry_loss(chosen, rejected, center_coef=0.01, label_smoothing=0.2)
    expected = (smoothed(1.0, 0.2) + smoothed(4.0, 0.2)) / 2 + 0.01 * (9.0 + 4.0) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_weighted_loss_smooths_each_head() -> None:
    chosen = torch.tensor([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
    rejected = torch.tensor([[1.0, 0.5], [1.0, -2.0], [3.0, 0.0]])
    weights = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    margin = torch.tensor([0.5, 0.0, 1.0])
    eps = 0.1
    # head 0: d = 0.5, -1, -3 with weights 2, 1, 0; head 1: d = -0.5, 3, -2 with weights 0, 1, 2
    head0 = (2 * smoothed(0.5, eps) + 1 * smoothed(-1.0, eps) + 0 * smoothed(-3.0, eps)) / 3
    head1 = (0 * smoothed(-0.5, eps) + 1 * smoothed(3.0, eps) + 2 * smoothed(-2.0, eps)) / 3
    loss = weighted_bradley_terry_loss(chosen, rejected, weights, margin, label_smoothing=eps)
    assert loss.item() == pytest.approx((head0 + head1) / 2, rel=1e-6)
    # one head with unit weights is the plain (smoothed) loss
    plain = bradley_terry_loss(chosen[:, 0], rejected[:, 0], margin, label_smoothing=eps)
    one = weighted_bradley_terry_loss(
        chosen[:, :1], rejected[:, :1], torch.ones(3, 1), margin, label_smoothing=eps
    )
    assert one.item() == pytest.approx(plain.item(), rel=1e-6)


def gradient_wrt_chosen(d: float, eps: float) -> float:
    chosen = torch.tensor([d], dtype=torch.float64, requires_grad=True)
    bradley_terry_loss(chosen, torch.tensor([0.0]), label_smoothing=eps).backward()
    assert chosen.grad is not None
    return float(chosen.grad.item())


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2, 0.4])
def test_pushes_the_same_way_at_zero_and_stops_at_log_odds(eps: float) -> None:
    at_zero, plain_at_zero = gradient_wrt_chosen(0.0, eps), gradient_wrt_chosen(0.0, 0.0)
    assert at_zero < 0 and plain_at_zero < 0  # descending still raises r_w
    assert at_zero == pytest.approx(-(1 - 2 * eps) / 2, abs=1e-6)
    optimum = math.log((1 - eps) / eps)
    assert abs(gradient_wrt_chosen(optimum, eps)) < 1e-6
    assert gradient_wrt_chosen(optimum - 0.5, eps) < 0 < gradient_wrt_chosen(optimum + 0.5, eps)
    assert gradient_wrt_chosen(optimum + 0.5, 0.0) < 0  # without smoothing it never stops


@pytest.mark.parametrize("eps", [0.5, -0.1, 1.0])
def test_out_of_range_is_refused_by_name(eps: float) -> None:
    one = torch.tensor([1.0])
    with pytest.raises(ValueError, match="label_smoothing"):
        bradley_terry_loss(one, one, label_smoothing=eps)
    with pytest.raises(ValueError, match="label_smoothing"):
        weighted_bradley_terry_loss(one[:, None], one[:, None], one[:, None], label_smoothing=eps)


def test_extreme_differences_stay_finite() -> None:
    far = bradley_terry_loss(torch.tensor([200.0]), torch.tensor([0.0]), label_smoothing=0.1)
    assert far.item() == pytest.approx(0.1 * 200.0, rel=1e-6)  # ε · d: the wrong-label term
    wrong = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([200.0]), label_smoothing=0.1)
    assert wrong.item() == pytest.approx(0.9 * 200.0, rel=1e-6)
