"""The export check: the artifact as written, scored by onnxruntime, against the fp32 torch model.

Parity is max |ORT − torch| over the sample pairs in padded batches of mixed lengths; batch
invariance is each pair scored alone vs inside a padded batch of 16; rank agreement is, over
every two sample pairs whose torch rewards differ, the fraction ORT puts in the same order (a
tie in ORT counts as disagreement). Rank agreement is reported, not gated: once every |Δ| is
within the tolerance, only pairs whose reference rewards are closer than twice it can swap.

Tolerances:

- fp32: max |Δ| ≤ 1e-4 and batch invariance ≤ 1e-5.
- fp16: every pair |Δ| ≤ 1e-2 + 1e-2·|reference| (fp16 keeps 11 significant bits, ~5e-4
  relative per rounding, and a deep graph adds many roundings) and batch invariance ≤ 1e-3.
  When onnxruntime cannot run the fp16 graph on the CPU, the report says "unchecked".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from rmserve.artifact.manifest import ParityReport
from rmserve.engine.padding import pad_batch
from rmserve.text.preprocess import PreparedPair
from rmserve_training.model.reward_model import Scorer

log = logging.getLogger(__name__)

OUTPUT_NAME = "rewards"
INVARIANCE_BATCH = 16
CPU = "CPUExecutionProvider"
REFERENCE = "torch fp32"
# What onnxruntime raises when it cannot build or run a graph on a provider.
RUN_ERRORS = (
    ort_errors.Fail,
    ort_errors.NotImplemented,
    ort_errors.InvalidGraph,
    ort_errors.RuntimeException,
    ort_errors.EPFail,
)


class ExportError(Exception):
    """The exported graph does not score like the torch model; nothing was written."""


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    invariance: float

    def describe(self) -> str:
        bound = f"{self.atol:.0e}" + (f" + {self.rtol:.0e}·|reference|" if self.rtol else "")
        return f"every |Δ| ≤ {bound}; batch invariance ≤ {self.invariance:.0e}"

    def parity_ok(self, ours: np.ndarray, reference: np.ndarray) -> bool:
        return bool(np.all(np.abs(ours - reference) <= self.atol + self.rtol * np.abs(reference)))


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=0.0, invariance=1e-5),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, invariance=1e-3),
}


@dataclass(frozen=True)
class CheckResult:
    report: ParityReport
    ok: bool


def torch_feed(
    pairs: Sequence[PreparedPair], pad_token_id: int, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in pad_batch(pairs, pad_token_id, names).items()}


def torch_scores(scorer: Scorer, pairs: Sequence[PreparedPair], pad_token_id: int) -> np.ndarray:
    scorer.eval()
    with torch.no_grad():
        rewards = scorer(**torch_feed(pairs, pad_token_id, scorer.input_names))
    scores: np.ndarray = rewards.float().numpy().astype(np.float32)
    return scores


def cpu_session(path: Path) -> ort.InferenceSession:
    """No memory arena: the checks run many batch shapes once each, and an arena keeps the
    memory of every one of them (a 28-layer 0.6B model's import grew by ~5 GiB)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=[CPU])


def ort_scores(
    session: ort.InferenceSession, pairs: Sequence[PreparedPair], pad_token_id: int
) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    (rewards,) = session.run([OUTPUT_NAME], pad_batch(pairs, pad_token_id, names))
    return np.asarray(rewards, dtype=np.float32)


def rank_agreement(ours: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of index pairs (i < j) with reference_i ≠ reference_j that ``ours`` orders the
    same way; 1.0 when the reference has no two different values."""
    upper = np.triu_indices(len(reference), k=1)
    ref_sign = np.sign(reference[:, None] - reference[None, :])[upper]
    our_sign = np.sign(ours[:, None] - ours[None, :])[upper]
    decided = ref_sign != 0
    if not decided.any():
        return 1.0
    return float(np.mean(our_sign[decided] == ref_sign[decided]))


def reference_scores(
    scorer: Scorer, pairs: Sequence[PreparedPair], pad_token_id: int
) -> np.ndarray:
    """The torch model's rewards, in the same padded batches the check scores."""
    chunks = [
        torch_scores(scorer, pairs[start : start + INVARIANCE_BATCH], pad_token_id)
        for start in range(0, len(pairs), INVARIANCE_BATCH)
    ]
    return np.concatenate(chunks)


def _artifact_scores(
    onnx_path: Path, pairs: Sequence[PreparedPair], pad_token_id: int
) -> tuple[np.ndarray, float, str]:
    session = cpu_session(onnx_path)
    ours = np.concatenate(
        [
            ort_scores(session, pairs[start : start + INVARIANCE_BATCH], pad_token_id)
            for start in range(0, len(pairs), INVARIANCE_BATCH)
        ]
    )
    batch = list(pairs[:INVARIANCE_BATCH])
    together = ort_scores(session, batch, pad_token_id)
    alone = np.concatenate([ort_scores(session, [pair], pad_token_id) for pair in batch])
    return ours, float(np.abs(together - alone).max()), session.get_providers()[0]


def check_artifact(
    onnx_path: Path,
    dtype: str,
    reference: np.ndarray,
    pairs: Sequence[PreparedPair],
    pad_token_id: int,
) -> CheckResult:
    """Score ``pairs`` with the written model and compare with ``reference`` (torch fp32)."""
    tolerance = TOLERANCES[dtype]
    try:
        ours, invariance, provider = _artifact_scores(onnx_path, pairs, pad_token_id)
    except RUN_ERRORS as e:
        reason = f"onnxruntime cannot run the {dtype} graph on {CPU}: {str(e).splitlines()[0]}"
        if dtype == "fp32":
            raise ExportError(reason) from e
        log.warning("export check: %s; the manifest says 'unchecked'", reason)
        report = ParityReport(
            status="unchecked", reference=REFERENCE, provider=None, pairs=len(pairs),
            tolerance=tolerance.describe(), reason=reason,
        )  # fmt: skip
        return CheckResult(report, ok=True)
    report = ParityReport(
        status="checked",
        reference=REFERENCE,
        provider=provider,
        pairs=len(pairs),
        max_abs_diff=float(np.abs(ours - reference).max()),
        rank_agreement=rank_agreement(ours, reference),
        batch_invariance_max_abs_diff=invariance,
        tolerance=tolerance.describe(),
    )
    ok = tolerance.parity_ok(ours, reference) and invariance <= tolerance.invariance
    return CheckResult(report, ok)


@dataclass(frozen=True)
class LongParity:
    tokens: int  # the longest pair checked
    max_abs_diff: float


def check_long_pairs(
    onnx_path: Path,
    dtype: str,
    reference: np.ndarray,
    pairs: Sequence[PreparedPair],
    pad_token_id: int,
) -> LongParity:
    """Each long pair scored alone by the written model against ``reference``; raises
    ExportError beyond the dtype's tolerance."""
    session = cpu_session(onnx_path)
    ours = np.concatenate([ort_scores(session, [pair], pad_token_id) for pair in pairs])
    result = LongParity(
        tokens=max(pair.num_tokens for pair in pairs),
        max_abs_diff=float(np.abs(ours - reference).max()),
    )
    tolerance = TOLERANCES[dtype]
    if not tolerance.parity_ok(ours, reference):
        raise ExportError(
            f"exported {dtype} graph differs from torch by {result.max_abs_diff:.2e} on a "
            f"{result.tokens}-token pair (accepting {tolerance.describe()})"
        )
    return result
