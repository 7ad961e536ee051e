"""The memory bound's activation term: its width, which batches it counts, and the shape an
artifact without one is given."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from rmserve.artifact.manifest import (
    Manifest,
    ModelShape,
    Normalization,
    ParityReport,
    Preprocessing,
)
from rmserve.serving.activations import (
    ACTIVATION_CONSTANT,
    activation_bytes,
    activation_width,
    assumed_shape,
    batch_activation_bytes,
    model_shape,
    retained_kv_width,
)

RESULTS = Path(__file__).parents[3] / "bench" / "results" / "activation-memory-cpu.json"
LAYER_RESULTS = RESULTS.with_name("activation-memory-layers-cpu.json")
GIB = 1 << 30
# Kernels no export of ours emits, measured for reference: the formula does not describe them
# (gqa-no-present, causal MHA and ONNX Attention hold the scores though "fused").
UNCOUNTED = ("gqa-no-present", "mha-causal", "onnx-attention", "mha-flash")
QWEN3_0_6B = ModelShape(
    hidden_size=1024, intermediate_size=3072, num_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, attention="fused",
)  # fmt: skip


def bench() -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(RESULTS.read_text())
    return figures


def bench_runs() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = bench()["runs"]
    return runs


def test_the_width_is_one_layers_peak_and_scores_are_quadratic() -> None:
    # 4 x hidden + (16 + 2 x 8) heads x 128 + 3 x 3072
    assert activation_width(QWEN3_0_6B, 16384, scores_held=False) == 4096 + 4096 + 9216
    assert activation_width(QWEN3_0_6B, 16384, scores_held=True) == 17408 + 2 * 16 * 16384


def test_fused_attention_holds_no_scores_materialised_attention_does() -> None:
    fused = batch_activation_bytes(QWEN3_0_6B, "fp32", 4096, 4096)
    kv = 28 * 2 * 8 * 128  # every layer's present K and V
    assert fused == pytest.approx((ACTIVATION_CONSTANT * 17408 + kv) * 4096 * 4, rel=1e-9)
    eager = QWEN3_0_6B.model_copy(update={"attention": "materialized"})
    held = batch_activation_bytes(eager, "fp32", 4096, 4096)
    assert held == pytest.approx(ACTIVATION_CONSTANT * 4096 * (17408 + 32 * 4096) * 4, rel=1e-9)
    assert batch_activation_bytes(QWEN3_0_6B, "fp16", 4096, 4096) * 2 == fused


def test_a_fused_bound_grows_with_layers_by_exactly_their_retained_kv() -> None:
    """Each fused layer's present K and V (2 x kv_heads x head_dim per token, at the dtype's
    bytes) stay alive to the run's end; a materialised layer's do not."""
    for dtype, size in (("fp32", 4), ("fp16", 2)):
        by_layers = {
            n: batch_activation_bytes(QWEN3_0_6B.model_copy(update={"num_layers": n}),
                                      dtype, 8192, 8192)
            for n in (2, 6, 28)
        }  # fmt: skip
        assert by_layers[6] - by_layers[2] == 4 * 2 * 8 * 128 * size * 8192
        assert by_layers[28] - by_layers[6] == 22 * 2 * 8 * 128 * size * 8192
    assert retained_kv_width(QWEN3_0_6B) == 28 * 2 * 8 * 128
    eager = QWEN3_0_6B.model_copy(update={"attention": "materialized"})
    assert retained_kv_width(eager) == 0
    shallow = eager.model_copy(update={"num_layers": 2})
    assert batch_activation_bytes(shallow, "fp32", 1024, 1024) == batch_activation_bytes(
        eager, "fp32", 1024, 1024
    )


def test_the_full_0_6b_bound_holds_a_served_8k_pair() -> None:
    """A full Qwen3-0.6B-shape 'ort-gqa' artifact (28 layers, fp32) served one 8,171-token pair
    and the server's RSS rose 1.99 GiB over idle (measured with the server, CPU, onnxruntime
    1.31): more than the working-set term alone (1.32 GiB), within the bound with its K/V."""
    assert ACTIVATION_CONSTANT * 8171 * 17408 * 4 < 1.99 * GIB
    assert batch_activation_bytes(QWEN3_0_6B, "fp32", 8171, 8171) >= 1.99 * GIB


def test_the_bound_holds_every_measured_layer_count() -> None:
    """bench/results/activation-memory-layers-cpu.json: GroupQueryAttention graphs at the
    0.6B's shape, 2-12 layers, one 8,192-token row; each layer adds its K and V to the peak
    (the measured slope is 1.00-1.08 x their bytes), and every run is within its bound; eager
    graphs do not grow with layers by more than the run's noise."""
    runs: list[dict[str, Any]] = json.loads(LAYER_RESULTS.read_text())["runs"]
    gqa = sorted((r for r in runs if r["attention"] == "gqa"), key=lambda r: r["layers"])
    assert len(gqa) >= 3 and gqa[-1]["layers"] >= 12
    for low, high in itertools.pairwise(gqa):
        kv = (high["layers"] - low["layers"]) * 2 * 8 * 128 * 4 * high["tokens"]
        grown = high["peak_over_before_bytes"] - low["peak_over_before_bytes"]
        assert 0.95 * kv <= grown <= 1.15 * kv, (low, high)
    for run in gqa:
        shape = QWEN3_0_6B.model_copy(update={"num_layers": run["layers"]})
        bound = batch_activation_bytes(shape, "fp32", run["tokens"], run["length"])
        assert bound / 2 < run["peak_over_before_bytes"] <= bound, run
    eager = QWEN3_0_6B.model_copy(update={"attention": "materialized"})
    for run in (r for r in runs if r["attention"] == "eager"):
        bound = batch_activation_bytes(eager, "fp32", run["tokens"], run["length"])
        assert run["peak_over_before_bytes"] <= bound, run


def test_fused_activations_per_token_do_not_grow_with_length() -> None:
    per_token = [batch_activation_bytes(QWEN3_0_6B, "fp32", n, n) / n for n in (512, 40960)]
    assert per_token[0] == pytest.approx(per_token[1], rel=1e-6)


def test_the_constant_bounds_the_fused_export_measured_on_the_cpu() -> None:
    """bench/results/activation-memory-cpu.json: a fused ('ort-gqa') import-hf export at the
    0.6B's attention shape, one row and a Prefer's two, 2k-16k tokens: every run's peak over
    the RSS before it is within the formula's bytes for that batch, and not far within (the
    term is not vacuous)."""
    runs = [r for r in bench_runs() if r["attention"] == "ort-gqa"]
    assert {r["rows"] for r in runs} == {1, 2} and max(r["length"] for r in runs) >= 16384
    shape = ModelShape.model_validate(bench()["artifact"]["shape"])
    for run in runs:
        bound = batch_activation_bytes(shape, "fp32", run["tokens"], run["length"])
        assert bound / 4 < run["peak_over_before_bytes"] <= bound, run


def test_the_constant_bounds_every_measured_graph() -> None:
    """Every decoder-shaped graph and the eager import-hf export, scores counted where the
    formula counts them (materialised attention), from 2,048 tokens on (below, the run's fixed
    part dominates)."""
    for run in bench_runs():
        if run["length"] < 2048 or run["attention"] in UNCOUNTED:
            continue
        held = run["attention"] in ("eager", "export")
        width = run["width_with_scores"] if held else run["width_linear"]
        assert run["peak_over_before_bytes"] <= ACTIVATION_CONSTANT * run["tokens"] * width * 4, run


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
    assert assumed_shape(parameters, "fused").attention == "fused"
    real_mlp = {384: 1536, 768: 3072, 1024: 3072, 4096: 14336}[real_hidden]
    real = 7 * real_hidden + 3 * real_mlp
    assert 0.8 <= activation_width(shape, 1, scores_held=False) / real <= 2.5


def test_a_query_chunk_makes_held_scores_linear_in_length() -> None:
    chunked = QWEN3_0_6B.model_copy(update={"attention_query_chunk": 1024})
    assert activation_width(chunked, 16384, scores_held=True) == 17408 + 2 * 16 * 1024
    assert activation_width(chunked, 512, scores_held=True) == 17408 + 2 * 16 * 512
    per_token = [batch_activation_bytes(chunked, "fp32", n, n) / n for n in (2048, 16384)]
    assert per_token[0] == pytest.approx(per_token[1], rel=1e-6)


def decoder_manifest(optimization: str, shape: ModelShape | None = None) -> Manifest:
    parity = ParityReport(
        status="checked", reference="torch fp32", provider="CPUExecutionProvider", pairs=16,
        max_abs_diff=1e-6, rank_agreement=1.0, batch_invariance_max_abs_diff=0.0,
        tolerance="every |Δ| ≤ 1e-04",
    )  # fmt: skip
    return Manifest(
        name="rm", version="v1", backbone="qwen3", architecture="decoder",
        input_names=["input_ids", "attention_mask"], pooling="last",
        preprocessing=Preprocessing(join="pair", max_length=40960, pad_token_id=0),
        normalization=Normalization(mean=0.0, std=1.0), optimization=optimization,
        files={}, parameters=32_487_936, parity=parity, shape=shape,
    )  # fmt: skip


def test_an_artifact_without_a_shape_is_fused_when_its_export_says_ort_gqa() -> None:
    """The fused import-hf export records optimization 'ort-gqa' and (so far) no shape: its
    estimate holds no scores, so a 40,960-token artifact's term is linear in length."""
    fused = model_shape(decoder_manifest("ort-gqa"), 130_000_000)
    eager = model_shape(decoder_manifest("none"), 130_000_000)
    assert (fused.attention, eager.attention) == ("fused", "materialized")
    assert fused.model_copy(update={"attention": "materialized"}) == eager
    recorded = model_shape(decoder_manifest("ort-gqa", QWEN3_0_6B), 130_000_000)
    assert recorded == QWEN3_0_6B
