"""Training progress: a bar (step, loss, ETA) when stderr is a terminal, log lines otherwise
(files, CI and ``kubectl logs`` get no carriage-return redraws)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

log = logging.getLogger(__name__)

LOG_EVERY_STEPS = 10


class StepProgress:
    def __init__(self, total: int, initial: int = 0, stream: TextIO | None = None) -> None:
        self.total = total
        stream = sys.stderr if stream is None else stream
        self._bar = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=stream, desc="train", unit="step")

    def step(self, step: int, epoch: int, loss: float, accuracy: float, lr: float) -> None:
        """Report that ``step`` (1-based) finished."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.2f}")
        elif step % LOG_EVERY_STEPS == 0 or step == self.total:
            log.info("step %d/%d epoch %d loss %.4f lr %.2e", step, self.total, epoch, loss, lr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
