"""Session-wide fixtures: demo data written once and a tiny reward model trained once (through
the real ``rmserve train`` command, in-process) and shared by every test that needs an artifact."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Small enough to train in seconds on 2 shared cores, large enough for >= 0.90 held-out accuracy.
TINY_TRAIN_ARGS = (
    "--base-model", "tiny",
    "--pooling", "cls",
    "--epochs", "4",
    "--batch-size", "16",
    "--lr", "1e-3",
    "--max-length", "128",
    "--seed", "0",
)  # fmt: skip


@dataclass(frozen=True)
class TinyRun:
    artifact: Path
    work_dir: Path
    train_data: Path
    eval_data: Path
    summary: dict[str, Any]


def run_command(argv: list[str]) -> tuple[int, list[str]]:
    """Run an ``rmserve`` training/eval subcommand in-process; returns (exit code, stdout lines).
    Builds its own parser so these tests do not depend on the serving commands."""
    from rmserve.tools import evaluate
    from rmserve_training import commands

    parser = argparse.ArgumentParser(prog="rmserve")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.register(sub)
    evaluate.register(sub)
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = int(args.handler(args) or 0)
    return code, out.getvalue().splitlines()


@pytest.fixture(scope="session")
def rmserve_cli() -> Callable[[list[str]], tuple[int, list[str]]]:
    """``rmserve_cli(["eval", ...]) -> (exit code, stdout lines)``, in-process."""
    return run_command


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rmserve_training.demo.data import write_demo_data

    folder = tmp_path_factory.mktemp("demo-data")
    write_demo_data(folder, n_train=2000, n_eval=300, seed=0)
    return folder


@pytest.fixture(scope="session")
def tiny_run(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny")
    artifact = root / "artifact"
    train_data, eval_data = demo_data_dir / "train.jsonl", demo_data_dir / "eval.jsonl"
    code, lines = run_command(
        [
            "train",
            "--train-data", str(train_data),
            "--eval-data", str(eval_data),
            "--out", str(artifact),
            *TINY_TRAIN_ARGS,
        ]
    )  # fmt: skip
    assert code == 0, lines
    summary = json.loads(lines[-1])
    return TinyRun(artifact, root / "artifact.work", train_data, eval_data, summary)


@pytest.fixture(scope="session")
def tiny_external_artifact(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model re-exported (``rmserve export --external-data``) with its weights in
    model.onnx.data beside model.onnx."""
    out = tmp_path_factory.mktemp("tiny-external") / "artifact"
    code, lines = run_command(
        ["export", "--checkpoint", str(tiny_run.work_dir / "checkpoint.pt"), "--out", str(out),
         "--external-data"]
    )  # fmt: skip
    assert code == 0, lines
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run: TinyRun) -> Path:
    """Folder of a tiny trained reward model artifact (model.onnx, tokenizer.json, manifest)."""
    return tiny_run.artifact


@dataclass(frozen=True)
class TinyEnsemble:
    artifact: Path  # the ensemble artifact `rmserve train --ensemble 3` wrote
    members: list[Path]  # its member artifacts, in output order
    summary: dict[str, Any]


def train_tiny_ensemble(demo_data_dir: Path, root: Path, *extra: str) -> dict[str, Any]:
    """``rmserve train --ensemble 3 --bootstrap`` of the tiny model into ROOT/ensemble."""
    # Members need not be good, only different: 2 epochs over the first 600 pairs (the three
    # cost about half the CPU of tiny_run).
    lines = (demo_data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "train.jsonl").write_text("\n".join(lines[:600]) + "\n", encoding="utf-8")
    args = [*TINY_TRAIN_ARGS]
    args[args.index("--epochs") + 1] = "2"
    code, lines = run_command(
        [
            "train",
            "--train-data", str(root / "train.jsonl"),
            "--eval-data", str(demo_data_dir / "eval.jsonl"),
            "--out", str(root / "ensemble"),
            "--ensemble", "3",
            "--bootstrap",
            *args,
            *extra,
        ]
    )  # fmt: skip
    assert code == 0, lines
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


@pytest.fixture(scope="session")
def tiny_ensemble(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyEnsemble:
    """A K=3 ensemble of the tiny model (bootstrap resamples, seeds 0, 1, 2), trained once."""
    root = tmp_path_factory.mktemp("tiny-ensemble")
    summary = train_tiny_ensemble(demo_data_dir, root)
    members = [root / "ensemble.work" / f"member-{k}" for k in range(3)]
    return TinyEnsemble(root / "ensemble", members, summary)


@pytest.fixture(scope="session")
def tiny_shared_ensemble(
    demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> TinyEnsemble:
    """The same K=3 ensemble as ``tiny_ensemble`` (same data, seeds, epochs) built as three
    heads on one shared backbone (``--ensemble-kind shared``): ``members`` is empty."""
    root = tmp_path_factory.mktemp("tiny-shared-ensemble")
    summary = train_tiny_ensemble(demo_data_dir, root, "--ensemble-kind", "shared")
    return TinyEnsemble(root / "ensemble", [], summary)
