"""LoRA, gradient checkpointing and bf16 on small random backbones
(rmserve_training/model/memory.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from transformers import AutoModel, Qwen3Config

from rmserve.artifact.manifest import Manifest, TrainingRecord
from rmserve_training.model.backbones import tiny_config
from rmserve_training.model.lora import LoraOptions, has_lora, merge_lora
from rmserve_training.model.memory import MemoryOptions, prepare_backbone
from rmserve_training.model.precision import autocast, effective_precision
from rmserve_training.model.reward_model import RewardModel
from rmserve_training.settings import TrainSettings
from rmserve_training.train.loss import bradley_terry_loss

FP32 = MemoryOptions("fp32", gradient_checkpointing=False, lora=None)


def qwen3_model(seed: int = 0) -> RewardModel:
    config = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(seed)
    backbone = AutoModel.from_config(config, attn_implementation="eager")
    return RewardModel.with_new_head(backbone, 32, "last", "decoder")


def bert_model(seed: int = 0) -> RewardModel:
    torch.manual_seed(seed)
    backbone = AutoModel.from_config(tiny_config(), attn_implementation="eager")
    return RewardModel.with_new_head(backbone, 64, "cls", "encoder")


def feed(vocab: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def lora(rank: int = 4) -> MemoryOptions:
    return MemoryOptions("fp32", False, LoraOptions(rank, 2 * rank, 0.0))


@pytest.mark.parametrize(("build", "model_type"), [(qwen3_model, "qwen3"), (bert_model, "bert")])
def test_lora_trains_only_adapters_and_the_whole_head(build: Any, model_type: str) -> None:
    model = build()
    record = prepare_backbone(model, model_type, lora())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(name.startswith("head.") or ".lora_" in name for name in trainable)
    assert any(".lora_A." in name for name in trainable)
    assert not any("pooler" in name for name, _ in model.named_parameters() if ".lora_" in name)
    assert record.lora is not None and record.lora.rank == 4
    assert record.trainable_parameters == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    adapted = [m.base_layer for m in model.modules() if hasattr(m, "lora_A")]
    expected = sum(4 * (m.in_features + m.out_features) for m in adapted)
    assert record.trainable_parameters == expected + model.head.weight.numel() + 1


def test_full_fine_tuning_trains_everything() -> None:
    model = qwen3_model()
    record = prepare_backbone(model, "qwen3", FP32)
    assert record.lora is None and not has_lora(model)
    assert all(p.requires_grad for p in model.parameters())


def test_merge_keeps_the_rewards_and_drops_the_adapters() -> None:
    model = qwen3_model()
    prepare_backbone(model, "qwen3", lora())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(std=0.5)  # fresh B is zero: make the adapters matter
    model.eval()
    with torch.no_grad():
        before = model(**feed())
        with model.backbone.disable_adapter():
            base = model(**feed())
        merge_lora(model)
        after = model(**feed())
    assert (before - base).abs().max() > 1e-2
    assert (after - before).abs().max() <= 1e-5
    assert not has_lora(model)
    assert not any("lora" in name for name, _ in model.named_parameters())


def forward_backward(model: RewardModel, calls: list[int]) -> dict[str, torch.Tensor]:
    layer = model.backbone.layers[0].self_attn  # in the checkpointed layer: recomputed
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    rewards = model(**feed())
    bradley_terry_loss(rewards[:2], rewards[2:]).backward()  # type: ignore[no-untyped-call]
    handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_recomputes_each_layer_with_the_same_gradients() -> None:
    plain, checkpointed = qwen3_model(), qwen3_model()
    prepare_backbone(plain, "qwen3", FP32)
    options = MemoryOptions("fp32", gradient_checkpointing=True, lora=None)
    record = prepare_backbone(checkpointed, "qwen3", options)
    assert record.gradient_checkpointing
    plain_calls: list[int] = []
    checkpointed_calls: list[int] = []
    expected = forward_backward(plain, plain_calls)
    got = forward_backward(checkpointed, checkpointed_calls)
    assert (len(plain_calls), len(checkpointed_calls)) == (1, 2)  # forward + recompute
    assert expected.keys() == got.keys()
    assert max((expected[n] - got[n]).abs().max().item() for n in expected) <= 1e-6


def test_gradient_checkpointing_under_lora_reaches_the_adapters() -> None:
    model = qwen3_model()
    options = MemoryOptions("fp32", gradient_checkpointing=True, lora=LoraOptions(4, 8, 0.0))
    prepare_backbone(model, "qwen3", options)
    calls: list[int] = []
    grads = forward_backward(model, calls)
    assert len(calls) == 2
    assert any(".lora_B." in name and g.abs().max() > 0 for name, g in grads.items())
    assert all(name.startswith("head.") or ".lora_" in name for name in grads)


def test_bf16_autocasts_the_forward_and_the_loss_stays_fp32() -> None:
    model = qwen3_model()
    prepare_backbone(model, "qwen3", lora())
    head_dtypes: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: head_dtypes.append(out.dtype))
    device = torch.device("cpu")
    model.train()
    with autocast("bf16", device):
        rewards = model(**feed())
    loss = bradley_terry_loss(rewards[:2], rewards[2:])
    loss.backward()  # type: ignore[no-untyped-call]
    with autocast("fp32", device):
        model(**feed())
    assert head_dtypes == [torch.bfloat16, torch.float32]
    assert rewards.dtype == torch.float32 and loss.dtype == torch.float32
    assert model.head.weight.dtype == torch.float32  # fp32 master weights
    assert model.head.weight.grad is not None and model.head.weight.grad.dtype == torch.float32
    assert torch.isfinite(loss)


def test_bf16_falls_back_to_fp32_where_the_device_lacks_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert effective_precision("bf16", torch.device("cpu")) == "bf16"
    with caplog.at_level(logging.WARNING, logger="rmserve_training.model.precision"):
        assert effective_precision("bf16", torch.device("meta")) == "fp32"
    assert "does not support bf16" in caplog.text
    assert effective_precision("fp32", torch.device("cpu")) == "fp32"


def test_options_from_settings_and_from_old_checkpoints() -> None:
    settings = TrainSettings(
        train_data="t", eval_data="e", out="o", lora_rank=8, precision="bf16",
        gradient_checkpointing=True,
    )  # fmt: skip
    options = MemoryOptions.from_settings(settings.model_dump())
    assert options == MemoryOptions("bf16", True, LoraOptions(rank=8, alpha=16, dropout=0.0))
    assert MemoryOptions.from_settings({"lr": 1e-4}) == FP32  # a checkpoint from before


def test_lora_options_need_a_rank() -> None:
    with pytest.raises(ValueError, match="lora_alpha and lora_dropout need lora_rank > 0"):
        TrainSettings(train_data="t", eval_data="e", out="o", lora_alpha=16)
    with pytest.raises(ValueError, match="lora_dropout"):
        TrainSettings(train_data="t", eval_data="e", out="o", lora_rank=4, lora_dropout=1.0)


def test_manifest_training_section_is_optional() -> None:
    record = TrainingRecord(precision="bf16", gradient_checkpointing=True, trainable_parameters=9)
    assert TrainingRecord.model_validate_json(record.model_dump_json()) == record
    assert Manifest.model_fields["training"].default is None
    with pytest.raises(ValueError, match="precision"):
        TrainingRecord.model_validate({"precision": "fp8", "gradient_checkpointing": False})
