"""``rmserve quantize``: a static int8 artifact of the tiny model that passes the gates, records
them, is served unchanged and stays batch-invariant through a real server; a candidate that
misses a gate is refused with its figures and nothing is written."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import MODEL_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preference_data import load_preferences
from rmserve.v1 import reward_pb2
from tests.support.harness import make_settings, serving

ASYNC = pytest.mark.asyncio(loop_scope="session")
WORDS = [
    "the",
    "reward",
    "model",
    "scores",
    "helpful",
    "correct",
    "polite",
    "answers",
    "about",
    "rivers",
    "and",
    "music",
]


def quantize_args(tiny_run: Any, out: Path, *flags: str) -> list[str]:
    return [
        "quantize",
        "--artifact", str(tiny_run.artifact),
        "--calibration-data", str(tiny_run.train_data),
        "--eval-data", str(tiny_run.eval_data),
        "--calibration-pairs", "64",
        "--eval-pairs", "300",
        "--out", str(out),
        *flags,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def int8_artifact(
    tiny_run: Any, rmserve_cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("int8") / "artifact"
    code, lines = rmserve_cli(quantize_args(tiny_run, out))
    assert code == 0, lines
    result = json.loads(lines[-1])
    assert result["written"] and result["dtype"] == "int8" and result["failed"] == []
    return out


def test_int8_artifact_passes_and_records_the_gates(int8_artifact: Path) -> None:
    manifest = read_manifest(int8_artifact)
    report = manifest.parity
    assert manifest.dtype == "int8" and manifest.format_version == 2 and report is not None
    assert report.status == "checked" and report.reference.startswith("onnx fp32")
    assert report.pairs == 300 and "int8 gates" in report.tolerance
    assert report.accuracy is not None and report.reference_accuracy is not None
    assert report.accuracy >= report.reference_accuracy - 0.005
    assert report.spearman is not None and report.spearman >= 0.99
    assert report.batch_invariance_max_abs_diff is not None
    assert report.batch_invariance_max_abs_diff <= 1e-5
    assert "int8-static-qdq" in manifest.optimization


def test_int8_graph_is_static_qdq_with_per_channel_weights(int8_artifact: Path) -> None:
    graph = onnx.load(str(int8_artifact / MODEL_FILE)).graph
    ops = [n.op_type for n in graph.node]
    assert "DynamicQuantizeLinear" not in ops and "Attention" not in ops
    assert ops.count("QuantizeLinear") > 0
    initializers = {t.name: t for t in graph.initializer}
    weight_dqs = [
        n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
    ]
    assert weight_dqs
    for dq in weight_dqs:
        weights = initializers[dq.input[0]]
        assert weights.data_type == onnx.TensorProto.INT8
        scales = numpy_helper.to_array(initializers[dq.input[1]])
        assert scales.shape == (numpy_helper.to_array(weights).shape[1],)  # one per channel
    # Activation scales are constants fixed at calibration: no scale is computed at run time.
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        assert q.input[1] in initializers and q.input[2] in initializers
    # Only the matrix products read quantised activations; LayerNorm, Gelu and attention fp32.
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"):
            assert not dq_outputs.intersection(node.input), node.name


def mixed_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [
        (" ".join(rng.choices(WORDS, k=rng.randint(0, 30))),
         " ".join(rng.choices(WORDS, k=rng.randint(0, 70))))
        for _ in range(n)
    ]  # fmt: skip


@ASYNC
async def test_int8_served_batch_invariant_and_model_info(int8_artifact: Path) -> None:
    """A pair alone and inside one padded batch of 16, through the real server: ≤ 1e-5."""
    pairs = mixed_pairs(16, seed=11)
    settings = make_settings(
        int8_artifact, max_batch_size=16, batch_policy="caps",
        max_batch_tokens=1_048_576, max_padding_ratio=100.0,
    )  # fmt: skip
    async with serving(settings) as h:
        batches = h.metric("rmserve_batch_size_count")
        request = reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
        )
        together = [r.reward for r in (await h.stub.ScoreBatch(request)).results]
        assert h.metric("rmserve_batch_size_count") - batches == 1  # one padded batch of 16
        alone = []
        for p, r in pairs:
            reply = await h.stub.Score(reward_pb2.ScoreRequest(prompt=p, response=r))
            alone.append(reply.reward)
        assert h.metric("rmserve_batch_size_count") - batches == 17
        info = await h.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    lengths = {reply for reply in (len(p.split()) + len(r.split()) for p, r in pairs)}
    assert len(lengths) > 8  # the batch really was padded
    assert np.abs(np.array(together) - np.array(alone)).max() <= 1e-5
    offline = OrtEngine(load_artifact(int8_artifact), provider="cpu", intra_op_threads=1)
    expected = offline.score_texts([p for p, _ in pairs], [r for _, r in pairs], batch_size=1)
    assert np.abs(np.array(alone) - expected).max() <= 1e-5
    manifest = read_manifest(int8_artifact)
    assert manifest.parity is not None
    assert info.dtype == "int8" and info.version == manifest.version
    assert info.parity.status == "checked"
    assert info.parity.accuracy == pytest.approx(manifest.parity.accuracy)
    assert info.parity.reference_accuracy == pytest.approx(manifest.parity.reference_accuracy)
    assert info.parity.spearman == pytest.approx(manifest.parity.spearman)


def activation_inputs(artifact: Path) -> list[str]:
    """The activations the quantiser calibrates: what the MatMuls (and fused attention's
    projection) read."""
    graph = onnx.load(str(artifact / MODEL_FILE)).graph
    weights = {t.name for t in graph.initializer}
    return sorted(
        {n.input[0] for n in graph.node if n.op_type in ("MatMul", "Attention")} - weights
    )


def test_absurd_calibration_ranges_are_refused_with_figures(tiny_run: Any, tmp_path: Path) -> None:
    from rmserve_training.quantize.build import QuantizeOptions, quantize_artifact
    from rmserve_training.quantize.gates import QuantizeRefused

    # A broken calibration: every activation range forced to ±1e-3, so real values clip.
    absurd = {
        name: [{"rmin": np.float32(-1e-3), "rmax": np.float32(1e-3)}]
        for name in activation_inputs(tiny_run.artifact)
    }
    options = QuantizeOptions(
        calibration_pairs=16, eval_pairs=300, extra_options={"TensorQuantOverrides": absurd}
    )
    out = tmp_path / "int8"
    with pytest.raises(QuantizeRefused) as refused:
        quantize_artifact(
            tiny_run.artifact, tiny_run.train_data, out, eval_data=tiny_run.eval_data,
            options=options,
        )  # fmt: skip
    figures = refused.value.figures
    assert "spearman" in figures.failed and figures.spearman < 0.99
    assert f"Spearman {figures.spearman:.5f}" in str(refused.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, no scratch


def test_cli_refusal_exits_non_zero_printing_the_figures(tiny_run: Any, tmp_path: Path) -> None:
    """A gate threshold no int8 model can meet (Spearman above 1) is refused by the command."""
    from rmserve_training import commands

    parser = argparse.ArgumentParser(prog="rmserve")
    commands.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "int8"
    args = parser.parse_args(quantize_args(tiny_run, out, "--min-spearman", "1.01"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        args.handler(args)
    message = str(exited.value.code)
    assert message.startswith("rmserve quantize: error: refused to write the int8 artifact")
    assert "spearman gate failed" in message and "Spearman vs fp32 ≥ 1.01" in message
    figures = json.loads(stdout.getvalue().splitlines()[-1])
    assert figures["written"] is False and figures["failed"] == ["spearman"]
    assert 0.99 <= figures["spearman"] < 1.01 and figures["pairs"] == 300
    assert not out.exists()


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_on_pairs_of_different_lengths(
    tiny_run: Any, tmp_path: Path, method: str
) -> None:
    """onnxruntime's histogram calibrators stack what one collect call sees into one array;
    fed one pair per call, pairs of many lengths calibrate and the candidate passes the gates."""
    from rmserve_training.quantize.build import QuantizeOptions, quantize_artifact

    pre = load_artifact(tiny_run.artifact).preprocessor
    prefs = load_preferences(tiny_run.train_data).pairs[:32]
    lengths = {pre.prepare(p.prompt, p.chosen).num_tokens for p in prefs}
    assert len(lengths) > 4  # the calibration pairs really differ in length
    options = QuantizeOptions(calibration_method=method, calibration_pairs=32, eval_pairs=300)
    out = tmp_path / "int8"
    result = quantize_artifact(
        tiny_run.artifact, tiny_run.train_data, out, eval_data=tiny_run.eval_data, options=options
    )
    assert f"{method}" in result.manifest.optimization and result.manifest.dtype == "int8"
    assert result.figures.failed == () and read_manifest(out).parity is not None


def test_int8_artifact_carries_the_sources_golden_pairs(
    int8_artifact: Path, tiny_artifact: Path
) -> None:
    """Same pairs, same torch fp32 references, at a tolerance the int8 graph measured on them;
    the int8 engine passes its load check, and a shift past that tolerance would not."""
    from rmserve.serving.golden import GoldenDrift, verify_golden

    source, int8 = load_artifact(tiny_artifact), load_artifact(int8_artifact)
    assert source.golden is not None and int8.golden is not None
    assert "golden.json" in int8.manifest.files
    assert int8.golden.pairs == source.golden.pairs and int8.golden.reference == "torch fp32"
    assert int8.golden.dtype == "int8" and int8.golden.tolerance.basis.startswith("int8: 2×")
    engine = OrtEngine(int8, provider="cpu", intra_op_threads=1)
    report = verify_golden(engine, int8)
    assert report is not None and report.ok
    # The int8 graph's rounding is fixed at calibration: here it repeats what quantize measured.
    assert report.max_abs_diff == pytest.approx(int8.golden.tolerance.atol / 2, rel=1e-3)
    assert report.max_abs_diff > source.golden.tolerance.atol  # int8 earns a wider bound

    class Shifted:
        provider, device = engine.provider, engine.device

        def score(self, pairs: Any) -> np.ndarray:
            return engine.score(pairs) + 2 * int8.golden.tolerance.atol  # type: ignore[union-attr]

    with pytest.raises(GoldenDrift, match="golden pairs drifted"):
        verify_golden(Shifted(), int8)
