"""The manifest's network shape, read from the backbone's config."""

from __future__ import annotations

from torch import nn
from transformers import BertConfig, BertModel, Qwen3Config, Qwen3Model

from rmserve_training.export.shape import model_shape
from rmserve_training.model.reward_model import RewardModel


def test_decoder_shape_with_grouped_kv_heads_and_fused_attention() -> None:
    config = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    scorer = RewardModel.with_new_head(Qwen3Model(config), 32, "last", "decoder")
    shape = model_shape(scorer, fused_attention=True)
    assert shape is not None
    assert (shape.hidden_size, shape.intermediate_size, shape.num_layers) == (32, 48, 3)
    assert (shape.num_attention_heads, shape.kv_heads, shape.head_dim) == (4, 2, 16)
    assert shape.attention == "fused"


def test_encoder_shape_holds_its_scores() -> None:
    config = BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4,
    )  # fmt: skip
    scorer = RewardModel.with_new_head(BertModel(config), 32, "cls", "encoder")
    shape = model_shape(scorer, fused_attention=False)
    assert shape is not None and shape.attention == "materialized"
    assert shape.kv_heads == 4 and shape.head_dim_or_default == 8


def test_no_config_no_shape() -> None:
    assert model_shape(nn.Linear(2, 1), fused_attention=False) is None
