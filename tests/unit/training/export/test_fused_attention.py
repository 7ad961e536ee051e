"""The fused-attention export: the torch forward against plain attention, the ONNX node
(GroupQueryAttention) against the torch forward, and row packing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from rmserve_training.export import fused_attention
from rmserve_training.export.fused_attention import (
    DOMAIN,
    chunked_causal_attention,
    group_query_attention,
)
from rmserve_training.model.reward_model import pack_real_tokens_first

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8


def plain_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, softcap: float, window: int
) -> torch.Tensor:
    """The textbook formula with a full [L, L] mask, as HF's eager attention computes it."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    length = query.shape[2]
    i, j = torch.arange(length)[:, None], torch.arange(length)[None, :]
    visible = (j <= i) & ((j > i - window) if window else True)
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2)


def qkv(length: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(length)
    shape = (batch, HEADS, length, HEAD_DIM)
    kv_shape = (batch, KV_HEADS, length, HEAD_DIM)
    return (
        torch.randn(shape, generator=generator),
        torch.randn(kv_shape, generator=generator),
        torch.randn(kv_shape, generator=generator),
    )


@pytest.mark.parametrize(("softcap", "window"), [(0.0, 0), (0.5, 0), (0.0, 5), (2.0, 7)])
def test_chunked_forward_equals_plain_attention(
    monkeypatch: pytest.MonkeyPatch, softcap: float, window: int
) -> None:
    query, key, value = qkv(37)
    expected = plain_attention(query, key, value, softcap, window)
    # Few score elements per chunk: many query chunks, the last one short.
    monkeypatch.setattr(fused_attention, "SCORE_ELEMENTS_PER_CHUNK", 2 * HEADS * 37 * 3)
    got = chunked_causal_attention(query, key, value, HEAD_DIM**-0.5, softcap, window)
    assert got.shape == (2, 37, HEADS, HEAD_DIM)
    assert torch.allclose(got, expected, atol=1e-5)


class OneAttention(nn.Module):
    def __init__(self, softcap: float, window: int) -> None:
        super().__init__()
        self.softcap, self.window = softcap, window

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = group_query_attention(
            query, key, value, HEAD_DIM**-0.5, self.softcap, self.window, HEADS, KV_HEADS
        )
        return out


@pytest.mark.parametrize(("softcap", "window"), [(0.0, 0), (0.5, 0), (0.0, 5), (2.0, 7)])
def test_onnx_node_equals_torch_at_any_length(tmp_path: Path, softcap: float, window: int) -> None:
    """Traced at one length, the graph has one GroupQueryAttention node and scores other batch
    sizes and lengths as the torch forward does (window and soft-cap carried as attributes)."""
    path = tmp_path / "attention.onnx"
    axes = {name: {0: "batch", 2: "length"} for name in ("query", "key", "value")}
    torch.onnx.export(
        OneAttention(softcap, window), qkv(9), str(path), input_names=list(axes),
        output_names=["out"], dynamic_axes=axes, opset_version=17,
        custom_opsets={DOMAIN: 1}, dynamo=False,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for length, batch in ((1, 1), (23, 3), (64, 2)):
        query, key, value = qkv(length, batch)
        (got,) = session.run(
            None, {"query": query.numpy(), "key": key.numpy(), "value": value.numpy()}
        )
        expected = plain_attention(query, key, value, softcap, window)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_packing_moves_real_tokens_first_in_order() -> None:
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 0, 0], [0, 5, 0, 6, 0]])
    mask = (ids != 0).long()
    packed_ids, packed_mask = pack_real_tokens_first(ids, mask)
    assert packed_ids.tolist() == [[5, 6, 7, 0, 0], [5, 6, 7, 0, 0], [5, 6, 0, 0, 0]]
    assert packed_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]


def test_fused_block_switches_attention_and_restores_it() -> None:
    class Config:
        _attn_implementation = "sdpa"

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = Config()

    backbone = nn.Sequential(Layer(), Layer())
    with fused_attention.fused_attention(backbone):
        assert {m.config._attn_implementation for m in backbone} == {fused_attention.IMPLEMENTATION}
    assert {m.config._attn_implementation for m in backbone} == {"sdpa"}
