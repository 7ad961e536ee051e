"""Pooling picks the right token under left and right padding; padding never changes a reward."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

from rmserve_training.model.reward_model import (
    RewardModel,
    last_token_index,
    pool,
    position_ids_from_mask,
)

RIGHT = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
LEFT = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])


def test_last_token_index_right_padding() -> None:
    assert last_token_index(RIGHT).tolist() == [2, 4, 0]


def test_last_token_index_left_padding() -> None:
    assert last_token_index(LEFT).tolist() == [4, 4, 4]


def test_position_ids_count_real_tokens_only() -> None:
    assert position_ids_from_mask(LEFT)[0].tolist() == [0, 0, 0, 1, 2]
    assert position_ids_from_mask(RIGHT)[0].tolist() == [0, 1, 2, 0, 0]


def test_mean_pooling_ignores_padding() -> None:
    hidden = torch.arange(10, dtype=torch.float32).reshape(1, 5, 2)
    pooled = pool(hidden, torch.tensor([[1, 1, 0, 0, 0]]), "mean")
    assert pooled.tolist() == [[1.0, 2.0]]
    assert pool(hidden, torch.tensor([[1, 1, 0, 0, 0]]), "cls").tolist() == [[0.0, 1.0]]
    assert pool(hidden, torch.tensor([[0, 0, 1, 1, 0]]), "last").tolist() == [[6.0, 7.0]]


def _encoder(pooling: str) -> RewardModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, attn_implementation="eager",
    )  # fmt: skip
    return RewardModel.with_new_head(BertModel(config), 16, pooling, "encoder")  # type: ignore[arg-type]


def _decoder() -> RewardModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, attn_implementation="eager",
    )  # fmt: skip
    return RewardModel.with_new_head(LlamaModel(config), 16, "last", "decoder")


def _padded(ids: list[int], width: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    pad = [0] * (width - len(ids))
    row = pad + ids if left else ids + pad
    mask = [0] * len(pad) + [1] * len(ids) if left else [1] * len(ids) + [0] * len(pad)
    return torch.tensor([row]), torch.tensor([mask])


@pytest.mark.parametrize(
    ("model", "left"),
    [
        (_encoder("cls"), False),
        (_encoder("mean"), False),
        (_decoder(), False),
        (_decoder(), True),
    ],
    ids=["encoder-cls-right", "encoder-mean-right", "decoder-right", "decoder-left"],
)
def test_padding_does_not_change_the_reward(model: RewardModel, left: bool) -> None:
    model.eval()
    ids = [5, 9, 3, 7]
    with torch.no_grad():
        alone = model(torch.tensor([ids]), torch.ones(1, 4, dtype=torch.long))
        padded = model(*_padded(ids, 9, left))
    assert alone.shape == (1,)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_decoder_reward_depends_on_the_last_token() -> None:
    model = _decoder().eval()
    with torch.no_grad():
        a = model(*_padded([5, 9, 3, 7], 6, False))
        b = model(*_padded([5, 9, 3, 8], 6, False))
    assert not torch.allclose(a, b)


def test_decoder_rejects_non_last_pooling() -> None:
    with pytest.raises(ValueError, match="last"):
        RewardModel.with_new_head(torch.nn.Identity(), 4, "cls", "decoder")
