"""Pieces of the shared-backbone ensemble: per-head bootstrap weights, the weighted per-head
Bradley–Terry loss, and head initialisation."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from pydantic import ValidationError

from rmserve_training.ensemble.shared_heads import build_shared_model, head_weights
from rmserve_training.model.backbones import tiny_config
from rmserve_training.settings import TrainSettings
from rmserve_training.train.bootstrap import bootstrap_counts, bootstrap_resample
from rmserve_training.train.checkpoints import build_model
from rmserve_training.train.loss import bradley_terry_loss, weighted_bradley_terry_loss


def test_head_k_weights_are_the_counts_of_full_member_k_resample() -> None:
    """Full member k trains on bootstrap_resample(pairs, seed + k) (train.py); head k weights
    each pair by how often that same resample holds it."""
    pairs = [f"pair-{i}" for i in range(50)]
    weights = head_weights(len(pairs), seed=7, heads=3, bootstrap=True)
    assert weights.shape == (50, 3) and weights.dtype == torch.float32
    for k in range(3):
        drawn = Counter(bootstrap_resample(pairs, 7 + k))
        assert weights[:, k].tolist() == [float(drawn[p]) for p in pairs]
        assert weights[:, k].sum().item() == 50
    assert not torch.equal(weights[:, 0], weights[:, 1])
    assert not torch.equal(weights[:, 1], weights[:, 2])
    assert (weights == 0).any()  # a resample leaves some pairs out


def test_bootstrap_counts_and_resample_are_the_same_draws() -> None:
    assert bootstrap_counts(4, seed=1) == [
        bootstrap_resample(range(4), 1).count(i) for i in range(4)
    ]
    assert bootstrap_resample(["a", "b", "c"], 3) == bootstrap_resample(["a", "b", "c"], 3)


def test_without_bootstrap_every_head_weights_every_pair_once() -> None:
    assert torch.equal(head_weights(5, seed=0, heads=2, bootstrap=False), torch.ones(5, 2))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_weighted_loss_equals_a_hand_computation() -> None:
    chosen = torch.tensor([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
    rejected = torch.tensor([[1.0, 0.5], [1.0, -2.0], [3.0, 0.0]])
    weights = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    margin = torch.tensor([0.5, 0.0, 1.0])
    # head 0: diffs 2-1-0.5 = 0.5, 0-1-0 = -1, 1-3-1 = -3; weights 2, 1, 0
    head0 = -(2 * log_sigmoid(0.5) + 1 * log_sigmoid(-1.0) + 0 * log_sigmoid(-3.0)) / 3
    # head 1: diffs 0.5-0.5-0.5 = -0.5, 1+2-0 = 3, -1-0-1 = -2; weights 0, 1, 2
    head1 = -(0 * log_sigmoid(-0.5) + 1 * log_sigmoid(3.0) + 2 * log_sigmoid(-2.0)) / 3
    loss = weighted_bradley_terry_loss(chosen, rejected, weights, margin)
    assert loss.item() == pytest.approx((head0 + head1) / 2, rel=1e-6)
    # the centring term is weighted the same way
    centre0 = (2 * 3.0**2 + 1 * 1.0**2 + 0 * 4.0**2) / 3
    centre1 = (0 * 1.0**2 + 1 * (-1.0) ** 2 + 2 * (-1.0) ** 2) / 3
    centred = weighted_bradley_terry_loss(chosen, rejected, weights, margin, center_coef=0.1)
    expected = (head0 + 0.1 * centre0 + head1 + 0.1 * centre1) / 2
    assert centred.item() == pytest.approx(expected, rel=1e-6)


def test_unit_weights_and_one_head_give_the_plain_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = (
        torch.randn(8, 1, generator=generator),
        torch.randn(8, 1, generator=generator),
    )
    margin = torch.rand(8, generator=generator)
    plain = bradley_terry_loss(chosen[:, 0], rejected[:, 0], margin, center_coef=0.2)
    weighted = weighted_bradley_terry_loss(chosen, rejected, torch.ones(8, 1), margin, 0.2)
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-6)


def test_head_k_starts_where_full_member_k_starts() -> None:
    config = tiny_config().to_dict()
    shared = build_shared_model(config, "cls", seed=3, source_spec="tiny", heads=3)
    head = shared.head
    assert isinstance(head, torch.nn.Linear) and head.weight.shape[0] == 3
    for k in range(3):
        member = build_model(config, "cls", 3 + k, "tiny").head
        assert isinstance(member, torch.nn.Linear)
        assert torch.equal(head.weight[k], member.weight[0])
        assert torch.equal(head.bias[k], member.bias[0])
    ids = torch.tensor([[2, 5, 7, 3]])
    assert shared(ids, torch.ones_like(ids)).shape == (1, 3)


def test_shared_kind_needs_at_least_two_heads() -> None:
    paths = {"train_data": "t.jsonl", "eval_data": "e.jsonl", "out": "o"}
    with pytest.raises(ValidationError, match="ensemble_kind 'shared' needs ensemble >= 2"):
        TrainSettings.model_validate({**paths, "ensemble_kind": "shared"})
    assert TrainSettings.model_validate({**paths, "ensemble": 2, "ensemble_kind": "shared"})
