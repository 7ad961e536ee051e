"""Parameter groups (backbone vs head, decay vs none) and the one schedule they share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rmserve_training.settings import TrainSettings
from rmserve_training.train.checkpoints import build_model
from rmserve_training.train.optim import build_optimizer, lr_factor, parameter_groups


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return build_model({}, "cls", 0, "tiny")


def settings(**overrides: object) -> TrainSettings:
    paths = {"train_data": Path("t"), "eval_data": Path("e"), "out": Path("o")}
    return TrainSettings(**paths, **overrides)  # type: ignore[arg-type]


def test_every_parameter_in_exactly_one_group_head_apart(model: nn.Module) -> None:
    groups = parameter_groups(model, lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in by_name["head"]["params"]} == {id(model.head.weight)}
    assert {id(p) for p in by_name["head_no_decay"]["params"]} == {id(model.head.bias)}
    assert by_name["head"]["lr"] == by_name["head_no_decay"]["lr"] == 1e-3
    assert by_name["backbone"]["lr"] == by_name["backbone_no_decay"]["lr"] == 1e-4
    assert all(p.dim() >= 2 for p in by_name["backbone"]["params"])
    assert all(p.dim() < 2 for p in by_name["backbone_no_decay"]["params"])
    assert by_name["backbone"]["weight_decay"] == 0.01
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0


def test_a_wrapped_model_still_finds_its_head(model: nn.Module) -> None:
    class Wrapper(nn.Module):  # what DDP / FSDP look like from outside: the model is .module
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.module = inner

    groups = parameter_groups(Wrapper(model), lr=1e-4, head_lr=5e-3, weight_decay=0.0)
    head = next(g for g in groups if g["name"] == "head")
    assert [id(p) for p in head["params"]] == [id(model.head.weight)] and head["lr"] == 5e-3


def test_head_lr_defaults_to_lr_and_both_follow_one_schedule(model: nn.Module) -> None:
    assert settings(lr=3e-4).resolved_head_lr() == 3e-4
    optimizer, scheduler = build_optimizer(
        model, settings(lr=1e-4, head_lr=2e-3, warmup_ratio=0.1, min_lr_ratio=0.1), 100
    )
    first = {g["name"]: g["lr"] for g in optimizer.param_groups}
    for step in range(100):
        factor = lr_factor(step, 100, 10, 0.1)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(
                factor * (2e-3 if "head" in group["name"] else 1e-4)
            )
        optimizer.step()
        scheduler.step()
    assert first["head"] == pytest.approx(2e-3 / 10)  # first warm-up step: 1/10 of the peak
    assert lr_factor(9, 100, 10, 0.1) == 1.0 and lr_factor(99, 100, 10, 0.1) == pytest.approx(
        0.1, abs=1e-3
    )


def test_first_step_moves_the_head_by_its_own_lr() -> None:
    fresh = build_model({}, "cls", 0, "tiny")
    before = fresh.head.weight.detach().clone()
    optimizer, _ = build_optimizer(fresh, settings(lr=1e-5, head_lr=1e-2, warmup_ratio=0.0), 1)
    ids = torch.randint(1000, 2000, (2, 8))
    fresh(input_ids=ids, attention_mask=torch.ones_like(ids)).sum().backward()
    optimizer.step()
    # Adam's first step moves each weight by about its lr, whatever the gradient's size.
    moved = (fresh.head.weight.detach() - before).abs().max().item()
    assert 0.5e-2 < moved <= 1.01e-2


def test_same_head_and_backbone_lr_updates_exactly_as_one_decay_split() -> None:
    """With --head-lr unset the groups change no update (the demo claim in
    docs/guides/training.md#recipe-for-long-dialogues)."""
    grouped, plain = build_model({}, "cls", 0, "tiny"), build_model({}, "cls", 0, "tiny")
    optimizer, scheduler = build_optimizer(grouped, settings(lr=1e-3), 3)
    reference = torch.optim.AdamW(
        [
            {"params": [p for p in plain.parameters() if p.dim() >= 2], "weight_decay": 0.01},
            {"params": [p for p in plain.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-3,
        fused=True,
    )
    reference_schedule = torch.optim.lr_scheduler.LambdaLR(
        reference, lambda s: lr_factor(s, 3, 0, 0.1)
    )
    ids = torch.randint(1000, 2000, (4, 12))
    for _ in range(3):
        for model, opt, sched in (
            (grouped, optimizer, scheduler),
            (plain, reference, reference_schedule),
        ):
            model(input_ids=ids, attention_mask=torch.ones_like(ids)).pow(2).sum().backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    for (name, a), b in zip(grouped.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b), name
