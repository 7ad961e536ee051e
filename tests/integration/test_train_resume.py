"""An interrupted and resumed run continues the same curve as an uninterrupted one. The
backbone has dropout, so the curve only matches if the RNG state is restored too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from rmserve_training.model.backbones import minilm_folder, tiny_config
from rmserve_training.settings import TrainSettings
from rmserve_training.train.loop import train


def _losses(work_dir: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (work_dir / "metrics.jsonl").open()]
    return {e["step"]: e["loss"] for e in events if e["event"] == "train"}


def _backbone_with_dropout(folder: Path) -> Path:
    config = BertConfig(**{**tiny_config().to_dict(), "hidden_dropout_prob": 0.2})
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes((minilm_folder() / "tokenizer.json").read_bytes())
    return folder


def test_resumed_run_matches_uninterrupted(demo_data_dir: Path, tmp_path: Path) -> None:
    backbone = _backbone_with_dropout(tmp_path / "backbone")
    subset = tmp_path / "train.jsonl"
    lines = (demo_data_dir / "train.jsonl").read_text().splitlines()[:120]
    subset.write_text("\n".join(lines) + "\n")
    eval_subset = tmp_path / "eval.jsonl"
    eval_subset.write_text("\n".join((demo_data_dir / "eval.jsonl").read_text().splitlines()[:40]))

    def settings(name: str, **extra: object) -> TrainSettings:
        return TrainSettings(
            train_data=subset,
            eval_data=eval_subset,
            out=tmp_path / name,
            base_model=str(backbone),
            pooling="cls",
            epochs=2,
            batch_size=8,
            grad_accum=2,
            lr=1e-3,
            max_length=64,
            seed=3,
            **extra,  # type: ignore[arg-type]
        )

    whole = train(settings("whole"))
    assert whole.finished and whole.steps == 16

    stopped = train(settings("split", stop_after_steps=5))
    assert not stopped.finished and stopped.steps == 5 and stopped.artifact is None
    resumed = train(settings("split", resume=True))
    assert resumed.finished and resumed.steps == 16

    expected, got = _losses(tmp_path / "whole.work"), _losses(tmp_path / "split.work")
    assert sorted(got) == list(range(1, 17))  # steps 1-5 before the stop, 6-16 after resuming
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-6), step
    assert resumed.eval_metrics["loss"] == pytest.approx(whole.eval_metrics["loss"], abs=1e-6)
