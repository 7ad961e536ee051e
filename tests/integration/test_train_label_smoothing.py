"""``rmserve train --label-smoothing``: the setting reaches the training loss of full members
and of shared heads, every eval loss stays plain Bradley–Terry, and the checkpoint records it.
The real losses run; a wrapper only notes which smoothing each call got."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rmserve_training.demo.data import write_demo_data
from rmserve_training.ensemble import shared_train
from rmserve_training.train import steps
from rmserve_training.train.checkpoints import load_checkpoint

Cli = Callable[[list[str]], tuple[int, list[str]]]
EPS = 0.2
PAIRS, BATCH = 48, 16  # 3 optimiser steps an epoch
FAST = ("--base-model", "tiny", "--pooling", "cls", "--batch-size", str(BATCH), "--lr", "1e-3",
        "--max-length", "64", "--seed", "0", "--label-smoothing", str(EPS))  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smoothing-data")
    write_demo_data(folder, n_train=PAIRS, n_eval=16, seed=0)
    return folder


def note_smoothing(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[float]:
    """Replace ``module.name`` (a loss) by itself plus a note of each call's label_smoothing."""
    real = getattr(module, name)
    seen: list[float] = []

    def noted(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("label_smoothing", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, noted)
    return seen


def train_events(work_dir: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in (work_dir / "metrics.jsonl").open(encoding="utf-8")]
    return [e for e in events if e["event"] == "train"]


def test_full_member_trains_with_smoothing_and_evaluates_without(
    rmserve_cli: Cli, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = note_smoothing(monkeypatch, steps, "bradley_terry_loss")
    code, lines = rmserve_cli(
        ["train", "--train-data", str(data_dir / "train.jsonl"),
         "--eval-data", str(data_dir / "eval.jsonl"), "--out", str(tmp_path / "art"),
         "--epochs", "2", "--stop-after-steps", "4", "--eval-every", "2", *FAST]
    )  # fmt: skip
    assert code == 3, lines  # stopped as asked (--stop-after-steps), no export
    summary = json.loads(lines[-1])
    assert (summary["steps"], summary["finished"]) == (4, False)
    # 4 steps of one micro-batch each, then 2 evals (steps 2 and 4)
    assert seen == [EPS, EPS, 0.0, EPS, EPS, 0.0]
    losses = [e["loss"] for e in train_events(tmp_path / "art.work")]
    assert len(losses) == 4 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    checkpoint = load_checkpoint(tmp_path / "art.work" / "checkpoint.pt")
    assert checkpoint["settings"]["label_smoothing"] == EPS


def test_shared_heads_train_with_smoothing_and_evaluate_without(
    rmserve_cli: Cli, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = note_smoothing(monkeypatch, shared_train, "weighted_bradley_terry_loss")
    evaluated = note_smoothing(monkeypatch, shared_train, "bradley_terry_loss")
    code, lines = rmserve_cli(
        ["train", "--train-data", str(data_dir / "train.jsonl"),
         "--eval-data", str(data_dir / "eval.jsonl"), "--out", str(tmp_path / "art"),
         "--ensemble", "2", "--ensemble-kind", "shared", "--bootstrap", *FAST]
    )  # fmt: skip
    assert code == 0, lines
    summary = json.loads(lines[-1])
    assert summary["steps"] == PAIRS // BATCH
    assert trained == [EPS] * (PAIRS // BATCH)
    assert evaluated == [0.0, 0.0]  # one held-out loss per head
    assert all(math.isfinite(head["eval_loss"]) for head in summary["heads"])
