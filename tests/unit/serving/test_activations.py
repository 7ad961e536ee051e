"""The memory bound's activation term: its width, which batches it counts, and the shape an
artifact without one is given."""

from __future__ import annotations

import pytest

from rmserve.artifact.manifest import ModelShape
from rmserve.serving.activations import (
    ACTIVATION_CONSTANT,
    activation_bytes,
    activation_width,
    assumed_shape,
    batch_activation_bytes,
)

QWEN3_0_6B = ModelShape(
    hidden_size=1024, intermediate_size=3072, num_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, attention="fused",
)  # fmt: skip


def test_the_width_is_one_layers_peak_and_scores_are_quadratic() -> None:
    # 4 x hidden + (16 + 2 x 8) heads x 128 + 3 x 3072
    assert activation_width(QWEN3_0_6B, 16384, scores_held=False) == 4096 + 4096 + 9216
    assert activation_width(QWEN3_0_6B, 16384, scores_held=True) == 17408 + 2 * 16 * 16384


def test_on_cpu_every_causal_kernel_holds_its_scores_on_cuda_a_fused_one_does_not() -> None:
    cpu = batch_activation_bytes(QWEN3_0_6B, "fp32", 4096, 4096, on_cpu=True)
    cuda = batch_activation_bytes(QWEN3_0_6B, "fp32", 4096, 4096, on_cpu=False)
    assert cpu == pytest.approx(ACTIVATION_CONSTANT * 4096 * (17408 + 32 * 4096) * 4, rel=1e-9)
    assert cuda == pytest.approx(ACTIVATION_CONSTANT * 4096 * 17408 * 4, rel=1e-9)
    eager = QWEN3_0_6B.model_copy(update={"attention": "materialized"})
    assert batch_activation_bytes(eager, "fp32", 4096, 4096, on_cpu=False) == cpu
    assert batch_activation_bytes(QWEN3_0_6B, "fp16", 4096, 4096, on_cpu=False) * 2 == cuda


@pytest.mark.parametrize(("workers", "long_slots"), [(1, 1), (2, 1), (4, 3), (2, 2)])
def test_long_slots_hold_a_prefers_two_max_length_pairs_the_rest_the_token_budget(
    workers: int, long_slots: int
) -> None:
    long = batch_activation_bytes(QWEN3_0_6B, "fp32", 2 * 16384, 16384)
    short = batch_activation_bytes(QWEN3_0_6B, "fp32", 2048, 2048)
    got = activation_bytes(QWEN3_0_6B, "fp32", 16384, 2048, workers, long_slots)
    assert got == long_slots * long + (workers - long_slots) * short


def test_a_token_budget_over_max_length_pads_rows_to_max_length_at_most() -> None:
    """An encoder with max_length 512 and max_batch_tokens 4096: short batches hold rows of at
    most 512 tokens, and they may outweigh a Prefer's two max-length pairs."""
    bert = ModelShape(
        hidden_size=384, intermediate_size=1536, num_layers=6, num_attention_heads=12,
        attention="materialized",
    )  # fmt: skip
    short = batch_activation_bytes(bert, "fp32", 4096, 512)
    assert short > batch_activation_bytes(bert, "fp32", 1024, 512)
    assert activation_bytes(bert, "fp32", 512, 4096, workers=2, long_slots=1) == 2 * short


@pytest.mark.parametrize(
    ("parameters", "real_hidden"),
    [(22_700_000, 384), (110_000_000, 768), (596_000_000, 1024), (8_030_000_000, 4096)],
)
def test_an_unknown_shape_is_estimated_near_real_ones(parameters: int, real_hidden: int) -> None:
    """MiniLM-L6, BERT-base, Qwen3-0.6B, Llama-3-8B: the estimate's one-layer width is within
    0.8x-2.5x of the real model's (4h + 3h + 3 x MLP)."""
    shape = assumed_shape(parameters)
    assert shape.attention == "materialized" and shape.hidden_size % 64 == 0
    real_mlp = {384: 1536, 768: 3072, 1024: 3072, 4096: 14336}[real_hidden]
    real = 7 * real_hidden + 3 * real_mlp
    assert 0.8 <= activation_width(shape, 1, scores_held=False) / real <= 2.5


def test_a_query_chunk_makes_held_scores_linear_in_length() -> None:
    chunked = QWEN3_0_6B.model_copy(update={"attention_query_chunk": 1024})
    assert activation_width(chunked, 16384, scores_held=True) == 17408 + 2 * 16 * 1024
    assert activation_width(chunked, 512, scores_held=True) == 17408 + 2 * 16 * 512
    per_token = [batch_activation_bytes(chunked, "fp32", n, n) / n for n in (2048, 16384)]
    assert per_token[0] == pytest.approx(per_token[1], rel=1e-6)
