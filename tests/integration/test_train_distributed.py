"""``rmserve train`` under torchrun on CPU (gloo): 2 ranks with per-rank batch B end with the
same weights and eval metrics as 1 process accumulating 2 micro-batches of B (the same global
batch, seed and data order; the tiny backbone has no dropout), for DDP and FSDP, and a run
stopped on one world size resumes on another to the same result.

Every process runs with one torch thread (torchrun's default for several ranks): the same
micro-batch then gives bitwise the same gradients, and the only differences left are summation
order in the all-reduce / reduce-scatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rmserve.artifact.manifest import MODEL_FILE
from rmserve_training.settings import TrainSettings
from rmserve_training.train.loop import TrainResult, train

# Documented in docs/guides/training.md#equivalence-with-one-process: both strategies must stay
# within this.
WEIGHT_TOLERANCE = 1e-5
METRIC_TOLERANCE = 1e-6
BATCH_SIZE = 4
EPOCHS = 2
TRAIN_PAIRS = 48  # 12 micro-batches of 4 an epoch: 6 global steps of 8 pairs
TOTAL_STEPS = 12
LAUNCH_TIMEOUT_S = 600  # a bound, never a synchroniser: both runs end by themselves


def _flags(data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "train_data": data["train"],
        "eval_data": data["eval"],
        "out": out,
        "base_model": "tiny",
        "pooling": "cls",
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "grad_accum": 1,
        "lr": 1e-3,
        "max_length": 64,
        "seed": 1,
        "threads": 1,
        **extra,
    }
    flags: list[str] = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def torchrun(nproc: int, flags: list[str]) -> list[str]:
    """``python -m torch.distributed.run -m rmserve train`` on this machine, which must exit 0
    (a stop asked for too: torchrun would restart workers on any other code); stdout lines.
    ``--standalone``: the rendezvous store binds port 0 and the ranks share it, so no port is
    picked before it is bound."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc),
        "-m", "rmserve", "--log-level", "WARNING", "train", *flags,
    ]  # fmt: skip
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.splitlines()


def in_process(data: dict[str, Path], out: Path, **extra: object) -> TrainResult:
    """One process, the reference: ``--threads 1`` like each rank (restored afterwards)."""
    fields = {
        "train_data": data["train"],
        "eval_data": data["eval"],
        "out": out,
        "base_model": "tiny",
        "pooling": "cls",
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": 1e-3,
        "max_length": 64,
        "seed": 1,
        "threads": 1,
        **extra,
    }
    threads = torch.get_num_threads()
    try:
        return train(TrainSettings(**fields))  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)


def _checkpoint(out: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(
        out.with_name(out.name + ".work") / "checkpoint.pt", map_location="cpu", weights_only=True
    )
    return state


def max_weight_diff(a: Path, b: Path) -> float:
    left, right = _checkpoint(a)["model"], _checkpoint(b)["model"]
    assert left.keys() == right.keys()
    return max((left[k] - right[k]).abs().max().item() for k in left)


def train_events(out: Path) -> list[dict[str, Any]]:
    path = out.with_name(out.name + ".work") / "metrics.jsonl"
    events = [json.loads(line) for line in path.open()]
    return [e for e in events if e["event"] == "train"]


def assert_same_run(got: Path, expected: Path) -> None:
    assert max_weight_diff(got, expected) <= WEIGHT_TOLERANCE
    got_eval = _checkpoint(got)["eval_metrics"]
    expected_eval = _checkpoint(expected)["eval_metrics"]
    assert got_eval.keys() == expected_eval.keys()
    for key, value in expected_eval.items():
        assert got_eval[key] == pytest.approx(value, abs=METRIC_TOLERANCE), key
    got_losses = {e["step"]: e["loss"] for e in train_events(got)}
    expected_losses = {e["step"]: e["loss"] for e in train_events(expected)}
    assert sorted(got_losses) == list(range(1, TOTAL_STEPS + 1))  # each step logged once
    for step, loss in expected_losses.items():
        assert got_losses[step] == pytest.approx(loss, abs=METRIC_TOLERANCE), step


@pytest.fixture(scope="module")
def data(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ddp-data")
    train_lines = (demo_data_dir / "train.jsonl").read_text().splitlines()[:TRAIN_PAIRS]
    eval_lines = (demo_data_dir / "eval.jsonl").read_text().splitlines()[:16]
    (folder / "train.jsonl").write_text("\n".join(train_lines) + "\n")
    (folder / "eval.jsonl").write_text("\n".join(eval_lines) + "\n")
    return {"train": folder / "train.jsonl", "eval": folder / "eval.jsonl"}


@pytest.fixture(scope="module")
def reference(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """1 process, 2 accumulated micro-batches of 4 pairs: the global batch of 2 ranks x 4."""
    out = tmp_path_factory.mktemp("ddp-reference") / "artifact"
    result = in_process(data, out, grad_accum=2)
    assert result.finished and result.steps == TOTAL_STEPS and result.world_size == 1
    yield out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(
    strategy: str, data: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "artifact"
    stdout = torchrun(2, _flags(data, out, strategy=strategy))
    summary = json.loads(stdout[-1])
    assert len([line for line in stdout if line.startswith("{")]) == 1  # rank 0 alone reports
    assert summary["world_size"] == 2 and summary["strategy"] == strategy
    assert summary["finished"] and summary["steps"] == TOTAL_STEPS
    assert (out / MODEL_FILE).is_file()
    assert _checkpoint(out)["world_size"] == 2
    assert_same_run(out, reference)


@pytest.mark.slow
def test_two_ranks_stopped_mid_epoch_resume_on_one_process(
    data: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "artifact"
    stdout = torchrun(2, _flags(data, out, strategy="fsdp", stop_after_steps=3))
    summary = json.loads(stdout[-1])  # stopped at step 3 of the 6 in epoch 1
    assert summary["steps"] == 3 and not summary["finished"] and not out.exists()
    resumed = in_process(data, out, grad_accum=2, resume=True)
    assert resumed.finished and resumed.steps == TOTAL_STEPS
    assert_same_run(out, reference)


@pytest.mark.slow
def test_one_process_stopped_mid_epoch_resumes_on_two_ranks(
    data: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "artifact"
    stopped = in_process(data, out, grad_accum=2, stop_after_steps=8)
    assert not stopped.finished and stopped.steps == 8  # step 2 of the 6 in epoch 2
    stdout = torchrun(2, _flags(data, out, strategy="fsdp", resume=True))
    assert json.loads(stdout[-1])["steps"] == TOTAL_STEPS
    assert_same_run(out, reference)


def test_resume_refuses_a_different_global_batch(data: dict[str, Path], tmp_path: Path) -> None:
    from rmserve_training.train.checkpoints import TrainError

    out = tmp_path / "artifact"
    in_process(data, out, grad_accum=2, stop_after_steps=1)
    with pytest.raises(TrainError, match=r"--grad-accum 1 x world size 1 = 1 .*--grad-accum 2"):
        in_process(data, out, grad_accum=1, resume=True)
