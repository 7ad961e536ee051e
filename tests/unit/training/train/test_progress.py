"""Training progress: a live bar on a terminal, plain log lines everywhere else."""

from __future__ import annotations

import io
import logging

import pytest

from rmserve_training.train.progress import LOG_EVERY_STEPS, StepProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(stream: Terminal) -> list[str]:
    """Each state of the bar (tqdm redraws at most every 0.1 s: the first and last always)."""
    return [line.strip() for line in stream.getvalue().split("\r") if line.strip()]


def run_steps(progress: StepProgress, first: int, last: int) -> None:
    for step in range(first, last + 1):
        progress.step(step, epoch=0, loss=0.5 / step, accuracy=0.75, lr=1e-4)
    progress.close()


def test_a_terminal_gets_a_bar_with_step_loss_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stream = Terminal()
    run_steps(StepProgress(total=25, stream=stream), 1, 25)
    first, *_, final = redraws(stream)
    assert "0/25" in first
    assert "25/25" in final and "loss=0.0200" in final and "acc=0.75" in final
    assert "<" in final  # tqdm's [elapsed<remaining]
    assert not [r for r in caplog.records if r.name == "rmserve_training.train.progress"]


def test_a_resumed_run_starts_the_bar_at_its_step() -> None:
    stream = Terminal()
    run_steps(StepProgress(total=30, initial=20, stream=stream), 21, 30)
    first, *_, final = redraws(stream)
    assert "20/30" in first and "30/30" in final


def test_elsewhere_plain_log_lines_every_few_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stream = io.StringIO()  # not a terminal: a file, a pipe, CI
    run_steps(StepProgress(total=25, stream=stream), 1, 25)
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "rmserve_training.train.progress"]
    logged_steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert logged_steps == [*range(LOG_EVERY_STEPS, 25, LOG_EVERY_STEPS), 25]
    assert lines[-1].startswith("step 25/25 epoch 0 loss 0.0200")
