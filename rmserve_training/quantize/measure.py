"""How ``rmserve quantize`` measures an int8 candidate against its fp32 source.

Both graphs (the fp32 source and the int8 candidate) score the same preference pairs through
onnxruntime, in length-sorted padded batches of 16 as a server forms them:

- accuracy: the fraction of pairs whose chosen response outscores the rejected one (ties are
  wrong, as in training); the candidate's may fall at most ``accuracy_drop`` below fp32's;
- Spearman: rank correlation of the candidate's rewards with fp32's over every scored response;
- batch invariance: max |reward alone − reward inside a padded batch of 16| over 16 responses
  of spread lengths (static scales make the integer matmuls exact, so this is fp32 noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rmserve.engine.padding import pad_batch
from rmserve.text.preprocess import PreparedPair
from rmserve_training.export.check import rank_agreement
from rmserve_training.quantize.gates import Figures, Gates

INVARIANCE_BATCH = 16
CPU = "CPUExecutionProvider"


def cpu_session(model: Path, threads: int = 1) -> ort.InferenceSession:
    """The server's session options: all graph optimisations (QDQ fusion), sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), options, providers=[CPU])


def run_batch(
    session: ort.InferenceSession, pairs: Sequence[PreparedPair], pad_token_id: int
) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    (rewards,) = session.run(["rewards"], pad_batch(pairs, pad_token_id, names))
    return np.asarray(rewards, dtype=np.float64)


def batched_scores(
    session: ort.InferenceSession, pairs: Sequence[PreparedPair], pad_token_id: int
) -> np.ndarray:
    """Rewards in input order, scored in length-sorted padded batches of 16."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].num_tokens)
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(order), INVARIANCE_BATCH):
        chunk = order[start : start + INVARIANCE_BATCH]
        out[chunk] = run_batch(session, [pairs[i] for i in chunk], pad_token_id)
    return out


def spread_sample(
    pairs: Sequence[PreparedPair], size: int = INVARIANCE_BATCH
) -> list[PreparedPair]:
    """``size`` pairs from shortest to longest, so the batch holds real padding."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].num_tokens)
    picks = np.linspace(0, len(order) - 1, num=min(size, len(order))).round().astype(int)
    return [pairs[order[i]] for i in picks]


def batch_invariance(
    session: ort.InferenceSession, pairs: Sequence[PreparedPair], pad_token_id: int
) -> float:
    together = run_batch(session, pairs, pad_token_id)
    alone = np.concatenate([run_batch(session, [pair], pad_token_id) for pair in pairs])
    return float(np.abs(together - alone).max())


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks: np.ndarray = (ends - (counts - 1) / 2.0)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0.0 or rb.std() == 0.0:
        return 1.0 if ra.std() == rb.std() else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(
    reference: ort.InferenceSession,
    candidate: ort.InferenceSession,
    chosen: Sequence[PreparedPair],
    rejected: Sequence[PreparedPair],
    pad_token_id: int,
    gates: Gates,
) -> Figures:
    both = [*chosen, *rejected]
    n = len(chosen)
    ref = batched_scores(reference, both, pad_token_id)
    ours = batched_scores(candidate, both, pad_token_id)
    accuracy = float(np.mean(ours[:n] > ours[n:]))
    reference_accuracy = float(np.mean(ref[:n] > ref[n:]))
    rho = spearman(ours, ref)
    invariance = batch_invariance(candidate, spread_sample(both), pad_token_id)
    failed = []
    if accuracy < reference_accuracy - gates.accuracy_drop:
        failed.append("accuracy")
    if not rho >= gates.spearman:
        failed.append("spearman")
    if not invariance <= gates.batch_invariance:
        failed.append("batch_invariance")
    return Figures(
        pairs=n,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        spearman=rho,
        max_abs_diff=float(np.abs(ours - ref).max()),
        rank_agreement=rank_agreement(ours, ref),
        batch_invariance_max_abs_diff=invariance,
        failed=tuple(failed),
    )
