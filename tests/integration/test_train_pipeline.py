"""demo-data -> train --base-model tiny -> artifact -> eval, through the real commands.

``tiny_run`` is the session fixture ``TinyRun`` from tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import GOLDEN_FILE, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preference_data import load_preferences

Cli = Callable[[list[str]], tuple[int, list[str]]]


def test_train_reports_and_writes_only_the_artifact(tiny_run: Any) -> None:
    summary = tiny_run.summary
    assert {"eval_accuracy", "eval_loss", "artifact", "train_seconds"} <= summary.keys()
    assert summary["eval_accuracy"] >= 0.90
    assert Path(summary["artifact"]).is_absolute()
    assert Path(summary["artifact"]) == tiny_run.artifact.resolve()
    assert sorted(p.name for p in tiny_run.artifact.iterdir()) == sorted(
        [MODEL_FILE, TOKENIZER_FILE, GOLDEN_FILE, MANIFEST_FILE]
    )
    assert (tiny_run.work_dir / "checkpoint.pt").is_file()
    events = [json.loads(line) for line in (tiny_run.work_dir / "metrics.jsonl").open()]
    kinds = {e["event"] for e in events}
    assert {"data", "train", "eval", "final"} <= kinds
    data = next(e for e in events if e["event"] == "data")
    assert "train_truncated_pairs" in data and "eval_truncated_pairs" in data
    manifest = read_manifest(tiny_run.artifact)
    assert manifest.metrics["eval_accuracy"] == pytest.approx(summary["eval_accuracy"])
    assert manifest.normalization.std > 0
    assert manifest.optimization.startswith("ort-bert")
    assert manifest.version == manifest.files[MODEL_FILE].sha256[:12]
    assert manifest.dtype == "fp32" and manifest.parity is not None
    assert manifest.parity.status == "checked"
    assert manifest.parity.max_abs_diff is not None and manifest.parity.max_abs_diff <= 1e-4
    for name in (MODEL_FILE, TOKENIZER_FILE):
        assert manifest.files[name].bytes == (tiny_run.artifact / name).stat().st_size


def test_onnx_eval_matches_torch_eval(tiny_run: Any, rmserve_cli: Cli) -> None:
    code, lines = rmserve_cli(
        ["eval", "--artifact", str(tiny_run.artifact), "--data", str(tiny_run.eval_data)]
    )
    assert code == 0
    report = json.loads(lines[-1])
    assert report["pairs"] == len(load_preferences(tiny_run.eval_data).pairs)
    assert abs(report["accuracy"] - tiny_run.summary["eval_accuracy"]) <= 0.005
    assert report["loss"] == pytest.approx(tiny_run.summary["eval_loss"], abs=1e-3)


def _eval_pairs(path: Path, n: int) -> tuple[list[str], list[str]]:
    pairs = load_preferences(path).pairs[:n]
    prompts = [p.prompt for p in pairs] + ["", "x " * 400]
    responses = [p.chosen if i % 2 else p.rejected for i, p in enumerate(pairs)] + ["", "y"]
    return prompts, responses


def test_artifact_matches_torch_on_padded_batches(tiny_run: Any) -> None:
    import torch

    from rmserve_training.export.check import torch_feed
    from rmserve_training.train.checkpoints import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(tiny_run.work_dir / "checkpoint.pt"))
    artifact = load_artifact(tiny_run.artifact)
    engine = OrtEngine(artifact, provider="cpu")
    prompts, responses = _eval_pairs(tiny_run.eval_data, 30)
    prepared = artifact.preprocessor.prepare_many(prompts, responses)
    assert len({p.num_tokens for p in prepared}) > 5  # mixed lengths, so batches are padded
    for start in range(0, len(prepared), 16):
        batch = prepared[start : start + 16]
        with torch.no_grad():
            expected = model(**torch_feed(batch, 0, model.input_names)).numpy()
        assert np.abs(engine.score(batch) - expected).max() <= 1e-4


def test_artifact_is_batch_invariant(tiny_artifact: Path, demo_data_dir: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    engine = OrtEngine(artifact, provider="cpu")
    prompts, responses = _eval_pairs(demo_data_dir / "eval.jsonl", 14)
    prepared = artifact.preprocessor.prepare_many(prompts, responses)
    assert len(prepared) == 16
    together = engine.score(prepared)
    alone = np.concatenate([engine.score([pair]) for pair in prepared])
    assert np.abs(together - alone).max() <= 1e-5


def test_export_command_reexports_the_checkpoint(
    tiny_run: Any, rmserve_cli: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    code, lines = rmserve_cli(
        ["export", "--checkpoint", str(tiny_run.work_dir / "checkpoint.pt"), "--out", str(out)]
    )
    assert code == 0
    assert json.loads(lines[-1])["artifact"] == str(out.resolve())
    original, again = read_manifest(tiny_run.artifact), read_manifest(out)
    assert again.normalization == original.normalization
    assert again.preprocessing == original.preprocessing
    prompts, responses = _eval_pairs(tiny_run.eval_data, 20)
    first = OrtEngine(load_artifact(tiny_run.artifact), provider="cpu")
    second = OrtEngine(load_artifact(out), provider="cpu")
    assert (
        np.abs(first.score_texts(prompts, responses) - second.score_texts(prompts, responses)).max()
        <= 1e-5
    )
