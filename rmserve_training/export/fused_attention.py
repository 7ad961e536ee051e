"""Decoder attention exported as onnxruntime's fused ``com.microsoft.GroupQueryAttention``.

Hugging Face decoders call attention through ``AttentionInterface``; for the trace the backbone
is switched to ``rmserve_gqa``, whose torch forward is a query-chunked causal attention (memory
linear in length) and whose ONNX symbolic is one ``GroupQueryAttention`` node per layer. On the
CPU that kernel needs ~0.9 GB at 16,384 tokens where ``MatMul`` + ``Softmax`` need ~17 GB
(``MultiHeadAttention`` with ``unidirectional=1`` also materialises [L, L]: 19.6 GB); on CUDA it
runs flash / memory-efficient attention. It takes K/V with fewer heads as they are (no repeat),
and Gemma-2's logit soft-capping and sliding windows as attributes.

The node is given no padding mask: ``RewardModel`` packs every row's real tokens to the front
first (``pack_real_tokens_first``), so under causal attention a real token only ever sees real
tokens, whatever padding the caller used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.onnx import symbolic_helper
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

IMPLEMENTATION = "rmserve_gqa"
DOMAIN = "com.microsoft"
# model_type values whose attention goes through AttentionInterface with RoPE applied before it.
FUSED_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma2"})
# Query rows per step of the torch forward: bounds its [B, H, rows, L] scores.
SCORE_ELEMENTS_PER_CHUNK = 1 << 25


def chunked_causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    softcap: float,
    window: int,
) -> torch.Tensor:
    """[B, H, L, D] queries over [B, Hkv, L, D] keys/values, causal, optionally soft-capped
    and windowed (a query sees the ``window`` latest keys, itself included) -> [B, L, H, D]."""
    batch, heads, length, _ = query.shape
    groups = heads // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    rows = max(1, SCORE_ELEMENTS_PER_CHUNK // max(1, batch * heads * length))
    positions = torch.arange(length, device=query.device)
    out = []
    for start in range(0, length, rows):
        q = query[:, :, start : start + rows]
        scores = torch.matmul(q.float(), key.float().transpose(-1, -2)) * scale
        if softcap > 0:
            scores = torch.tanh(scores / softcap) * softcap
        here = positions[start : start + rows, None]
        hidden = positions[None, :] > here
        if window > 0:
            hidden = hidden | (positions[None, :] <= here - window)
        scores = scores.masked_fill(hidden, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out.append(torch.matmul(probs, value.float()).to(query.dtype))
    return torch.cat(out, dim=2).transpose(1, 2).contiguous()


@torch.library.custom_op("rmserve::group_query_attention", mutates_args=())
def group_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    softcap: float,
    window: int,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    return chunked_causal_attention(query, key, value, scale, softcap, window)


@group_query_attention.register_fake
def _(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    softcap: float,
    window: int,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    return query.transpose(1, 2).contiguous()


@symbolic_helper.parse_args("v", "v", "v", "f", "f", "i", "i", "i")
def group_query_attention_symbolic(
    g: Any,
    query: Any,
    key: Any,
    value: Any,
    scale: float,
    softcap: float,
    window: int,
    heads: int,
    kv_heads: int,
) -> Any:
    """[B, H, L, D] -> GroupQueryAttention on [B, L, H·D] -> [B, L, H, D]."""

    def const(value: Any) -> Any:
        return g.op("Constant", value_t=torch.tensor(value))

    def flat(x: Any) -> Any:
        x = g.op("Transpose", x, perm_i=[0, 2, 1, 3])
        return g.op("Reshape", x, const([0, 0, -1]))

    absent: Any = symbolic_helper._optional_input_placeholder_tensor  # past key / value
    shape = g.op("Shape", query)
    batch = g.op("Slice", shape, const([0]), const([1]))
    length = g.op("Gather", shape, const(2), axis_i=0)
    # Every row is attended whole (causal): rows arrive packed, real tokens first.
    seqlens_k = g.op("Cast", g.op("Expand", g.op("Sub", length, const(1)), batch), to_i=6)
    total = g.op("Cast", length, to_i=6)
    out, _, _ = g.op(
        f"{DOMAIN}::GroupQueryAttention",
        flat(query),
        flat(key),
        flat(value),
        absent(g),
        absent(g),
        seqlens_k,
        total,
        num_heads_i=heads,
        kv_num_heads_i=kv_heads,
        scale_f=scale,
        softcap_f=softcap,
        local_window_size_i=window if window > 0 else -1,
        outputs=3,
    )
    return g.op("Reshape", out, const([0, 0, heads, -1]))


torch.onnx.register_custom_op_symbolic(  # type: ignore[attr-defined]
    "rmserve::group_query_attention", group_query_attention_symbolic, 1
)


def gqa_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function; ``attention_mask`` is ignored (see the module doc)."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = group_query_attention(
        query,
        key,
        value,
        float(scale),
        float(softcap or 0.0),
        int(sliding_window or 0),
        int(module.config.num_attention_heads),
        int(module.config.num_key_value_heads),
    )
    return out, None


def no_mask(*args: Any, **kwargs: Any) -> None:
    return None


AttentionInterface.register(IMPLEMENTATION, gqa_attention)
AttentionMaskInterface.register(IMPLEMENTATION, no_mask)


def supports_fused_attention(model_type: str, backbone: nn.Module) -> bool:
    return model_type in FUSED_FAMILIES and hasattr(backbone, "config")


@contextmanager
def fused_attention(backbone: nn.Module) -> Iterator[None]:
    """Within the block the backbone's attention is ``rmserve_gqa``."""
    configs: list[Any] = [m.config for m in backbone.modules() if hasattr(m, "config")]
    before = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        for config, implementation in zip(configs, before, strict=True):
            config._attn_implementation = implementation
