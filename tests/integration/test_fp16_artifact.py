"""fp16 artifacts: fp32 inputs and rewards, an honest parity report checked on the CPU provider
(or 'unchecked' when onnxruntime cannot run the graph, said again at server start-up), and
GetModelInfo showing dtype, parameters and parity."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import MODEL_FILE, WEIGHTS_FILE
from rmserve.v1 import reward_pb2
from tests.support.harness import make_settings, serving

ASYNC = pytest.mark.asyncio(loop_scope="session")

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("", ""),
    ("Say something kind. " * 40, "You are doing well."),
    ("short", "a longer answer that goes on for a while " * 3),
]


def export(cli: Any, tiny_run: Any, out: Path, *flags: str) -> None:
    checkpoint = str(tiny_run.work_dir / "checkpoint.pt")
    code, lines = cli(["export", "--checkpoint", checkpoint, "--out", str(out), *flags])
    assert code == 0, lines


@pytest.fixture(scope="module")
def fp16_artifact(
    tiny_run: Any, rmserve_cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "artifact"
    export(rmserve_cli, tiny_run, out, "--dtype", "fp16", "--external-data")
    return out


def test_fp16_weights_with_fp32_inputs_and_outputs(
    fp16_artifact: Path, tiny_external_artifact: Path
) -> None:
    model = onnx.load(str(fp16_artifact / MODEL_FILE), load_external_data=False)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    weights = [t for t in model.graph.initializer if t.data_type in float_types]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    (output,) = model.graph.output
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_bytes = read_manifest(fp16_artifact).files[WEIGHTS_FILE].bytes
    fp32_bytes = read_manifest(tiny_external_artifact).files[WEIGHTS_FILE].bytes
    assert fp16_bytes is not None and fp32_bytes is not None
    assert fp16_bytes < 0.6 * fp32_bytes


def test_fp16_parity_report_is_checked_on_cpu(fp16_artifact: Path) -> None:
    manifest = read_manifest(fp16_artifact)
    report = manifest.parity
    assert manifest.dtype == "fp16" and report is not None
    assert report.status == "checked" and report.provider == "CPUExecutionProvider"
    assert report.reference == "torch fp32" and report.pairs >= 16
    assert report.max_abs_diff is not None and 0.0 < report.max_abs_diff <= 0.05
    assert report.rank_agreement is not None and report.rank_agreement >= 0.9
    assert "1e-02·|reference|" in report.tolerance


@ASYNC
async def test_fp16_served_rewards_and_model_info(
    fp16_artifact: Path, tiny_external_artifact: Path
) -> None:
    pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    request = reward_pb2.ScoreBatchRequest(pairs=pairs)
    async with serving(make_settings(fp16_artifact)) as h:
        fp16 = await h.stub.ScoreBatch(request)
        info = await h.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    async with serving(make_settings(tiny_external_artifact)) as h:
        fp32 = await h.stub.ScoreBatch(request)
    ours = np.array([r.reward for r in fp16.results])
    reference = np.array([r.reward for r in fp32.results])
    assert np.all(np.abs(ours - reference) <= 1e-2 + 1e-2 * np.abs(reference))
    manifest = read_manifest(fp16_artifact)
    assert info.dtype == "fp16" and info.parameters == manifest.parameters > 0
    assert info.parity.status == "checked"
    assert info.parity.max_abs_diff == pytest.approx(manifest.parity.max_abs_diff)


@ASYNC
async def test_unrunnable_fp16_graph_is_recorded_unchecked_and_said_at_startup(
    tiny_run: Any,
    tmp_path: Path,
    rmserve_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rmserve_training.export import check as export_check

    def cannot_run(*args: Any) -> Any:
        raise ort_errors.NotImplemented("Could not find an implementation for MatMul(13) fp16")

    monkeypatch.setattr(export_check, "_artifact_scores", cannot_run)
    out = tmp_path / "artifact"
    export(rmserve_cli, tiny_run, out, "--dtype", "fp16")
    monkeypatch.undo()
    manifest = read_manifest(out)
    report = manifest.parity
    assert manifest.dtype == "fp16" and report is not None
    assert report.status == "unchecked" and report.provider is None
    assert report.max_abs_diff is None and report.rank_agreement is None
    assert "Could not find an implementation for MatMul" in report.reason
    with caplog.at_level(logging.INFO, logger="rmserve.server.app"):
        async with serving(make_settings(out)) as h:
            info = await h.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    assert info.parity.status == "unchecked" and not info.parity.HasField("max_abs_diff")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fp16 weights UNCHECKED" in w and "MatMul" in w for w in warnings), warnings


def test_fp32_graph_that_cannot_run_fails_the_export(
    tiny_run: Any, tmp_path: Path, rmserve_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only fp16 may be 'unchecked': an fp32 graph onnxruntime cannot run is an export error."""
    from rmserve_training.export import check as export_check

    def cannot_run(*args: Any) -> Any:
        raise ort_errors.Fail("broken graph")

    monkeypatch.setattr(export_check, "_artifact_scores", cannot_run)
    with pytest.raises(SystemExit, match="cannot run the fp32 graph on CPUExecutionProvider"):
        export(rmserve_cli, tiny_run, tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()
