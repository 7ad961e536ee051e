"""Golden pairs scored through the engine and compared with their reference rewards.

``verify_golden`` is the load check (the server runs it on the real session before anything
wraps it; a model version about to be swapped in can run it too). The same pairs, batches and
comparison serve the canary that re-scores them while serving
(``rmserve.serving.golden_canary``).

A pair drifts when its reward is not within the artifact's tolerance of its reference, or is
not a finite number (a NaN never passes). The pairs are first re-tokenised from their texts and
must give the token ids recorded at export: a changed tokenizer is refused before any reward is
compared. Batches are a few pairs in the recorded order (short and long interleaved), so the
padded path is exercised as in serving; batch invariance makes the batching immaterial to the
rewards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmserve.artifact.golden import GoldenPair, GoldenTolerance
from rmserve.artifact.manifest import ArtifactError
from rmserve.engine.session import Engine, LoadedArtifact
from rmserve.text.prepared import PreparedPair, int64

log = logging.getLogger(__name__)

GOLDEN_BATCH_PAIRS = 4  # pairs per engine run: short ones padded to long ones, and a short run
GOLDEN_BATCH_TOKENS = 8192  # padded tokens per run at most (a longer pair runs alone)


class GoldenDrift(ArtifactError):
    """The model as it runs here does not score its golden pairs as the source model did (or
    its tokenizer no longer gives their recorded token ids). ``report`` holds the figures when
    rewards were compared."""

    def __init__(self, message: str, report: GoldenReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class GoldenPairs:
    """An artifact's golden pairs, tokenised and checked, ready to score."""

    model: str
    reference_name: str  # what gave the reference rewards, e.g. "torch fp32"
    pairs: list[PreparedPair]
    reference: np.ndarray  # float64, [N] or [N, K]
    tolerance: GoldenTolerance
    batches: list[list[int]]  # indices into pairs, one engine run each


@dataclass(frozen=True)
class GoldenReport:
    """One check's figures. ``drift_ratio``: the largest |Δ| / allowed over every pair (and
    member); above 1 is drift. Non-finite rewards count as infinite |Δ|."""

    model: str
    provider: str
    pairs: int
    beyond: int  # pairs with at least one reward beyond tolerance
    max_abs_diff: float
    drift_ratio: float
    worst: int  # the pair with the largest ratio
    worst_tokens: int
    worst_reward: float
    worst_reference: float
    worst_allowed: float
    reference_name: str
    tolerance: GoldenTolerance

    @property
    def ok(self) -> bool:
        return self.beyond == 0

    def describe(self) -> str:
        if self.ok:
            return (
                f"{self.pairs} golden pairs within tolerance on {self.provider}: max |Δ| "
                f"{self.max_abs_diff:.1e} against the {self.reference_name} reference "
                f"({self.tolerance.describe()})"
            )
        return (
            f"golden pairs drifted on {self.provider}: {self.beyond} of {self.pairs} beyond "
            f"tolerance; worst pair {self.worst} ({self.worst_tokens} tokens) scores "
            f"{self.worst_reward:.6g} against the {self.reference_name} reference "
            f"{self.worst_reference:.6g}: |Δ| {abs(self.worst_reward - self.worst_reference):.2e}"
            f" where {self.worst_allowed:.1e} is allowed; max |Δ| {self.max_abs_diff:.2e} "
            f"({self.tolerance.describe()})"
        )


def golden_batches(
    pairs: Sequence[PreparedPair],
    max_pairs: int = GOLDEN_BATCH_PAIRS,
    max_tokens: int = GOLDEN_BATCH_TOKENS,
) -> list[list[int]]:
    """Consecutive runs of up to ``max_pairs`` pairs whose padded size (longest × count) stays
    within ``max_tokens``; a pair longer than that runs alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, pair in enumerate(pairs):
        grown = max(longest, pair.num_tokens)
        if current and (len(current) >= max_pairs or grown * (len(current) + 1) > max_tokens):
            batches.append(current)
            current, grown = [], pair.num_tokens
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


def _recorded(pair: GoldenPair) -> PreparedPair:
    return PreparedPair(
        int64(pair.input_ids), int64(pair.token_type_ids), pair.truncated, pair.response_truncated
    )


def _first_difference(ours: PreparedPair, recorded: PreparedPair) -> str:
    if (ours.truncated, ours.response_truncated) != (
        recorded.truncated,
        recorded.response_truncated,
    ):
        return (
            f"truncated={ours.truncated}, response_truncated={ours.response_truncated} here, "
            f"{recorded.truncated}, {recorded.response_truncated} at export"
        )
    for name in ("input_ids", "token_type_ids"):
        a, b = getattr(ours, name), getattr(recorded, name)
        if len(a) != len(b):
            return f"{len(a)} tokens here, {len(b)} at export"
        at = int(np.flatnonzero(a != b)[0]) if (a != b).any() else -1
        if at >= 0:
            return f"{name}[{at}] is {int(a[at])} here, {int(b[at])} at export"
    return "no difference"  # unreachable: called only for pairs that differ


def golden_pairs(
    artifact: LoadedArtifact, max_batch_tokens: int = GOLDEN_BATCH_TOKENS
) -> GoldenPairs | None:
    """The artifact's golden pairs tokenised by its own preprocessor, in batches of at most
    ``max_batch_tokens`` padded tokens (the server's own bound: golden batches are never bigger
    than those it serves); None when it has none. Raises ``GoldenDrift`` when a pair's tokens
    differ from those recorded at export."""
    golden = artifact.golden
    if golden is None:
        return None
    texts = golden.pairs
    prepared = artifact.preprocessor.prepare_many(
        [p.prompt for p in texts], [p.response for p in texts]
    )
    differ = [
        i for i, (ours, p) in enumerate(zip(prepared, texts, strict=True)) if ours != _recorded(p)
    ]
    if differ:
        first = differ[0]
        raise GoldenDrift(
            f"{artifact.folder}: golden pair {first} tokenises differently than at export "
            f"({_first_difference(prepared[first], _recorded(texts[first]))}; {len(differ)} of "
            f"{len(texts)} pairs differ): tokenizer.json, the preprocessing or the tokenizers "
            "library changed"
        )
    reference = np.array([p.reward for p in texts], dtype=np.float64)
    return GoldenPairs(
        artifact.manifest.name, golden.reference, prepared, reference, golden.tolerance,
        golden_batches(prepared, max_tokens=min(max_batch_tokens, GOLDEN_BATCH_TOKENS)),
    )  # fmt: skip


def compare(golden: GoldenPairs, rewards: np.ndarray, provider: str) -> GoldenReport:
    """The figures of ``rewards`` (in pair order) against the reference."""
    ours = np.asarray(rewards, dtype=np.float64)
    if ours.shape != golden.reference.shape:
        raise GoldenDrift(
            f"engine returned rewards of shape {ours.shape} for golden pairs of shape "
            f"{golden.reference.shape}"
        )
    ref = golden.reference
    diff = np.where(np.isfinite(ours), np.abs(ours - ref), np.inf)
    allowed = golden.tolerance.atol + golden.tolerance.rtol * np.abs(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0.0, 0.0, diff / allowed)
    beyond = ~(diff <= allowed)
    per_pair_ratio = ratio if ratio.ndim == 1 else ratio.max(axis=1)
    per_pair_beyond = beyond if beyond.ndim == 1 else beyond.any(axis=1)
    worst = int(np.argmax(per_pair_ratio))
    column = 0 if ratio.ndim == 1 else int(np.argmax(ratio[worst]))
    pick = (worst,) if ratio.ndim == 1 else (worst, column)
    return GoldenReport(
        model=golden.model,
        provider=provider,
        pairs=len(golden.pairs),
        beyond=int(per_pair_beyond.sum()),
        max_abs_diff=float(diff.max()),
        drift_ratio=float(per_pair_ratio.max()),
        worst=worst,
        worst_tokens=golden.pairs[worst].num_tokens,
        worst_reward=float(ours[pick]),
        worst_reference=float(ref[pick]),
        worst_allowed=float(allowed[pick]),
        reference_name=golden.reference_name,
        tolerance=golden.tolerance,
    )


def score_golden(engine: Engine, golden: GoldenPairs) -> np.ndarray:
    """Blocking: the engine's rewards of every golden pair, in pair order."""
    out = np.empty(golden.reference.shape, dtype=np.float64)
    for batch in golden.batches:
        out[batch] = engine.score([golden.pairs[i] for i in batch])
    return out


def verify_golden(
    engine: Engine, artifact: LoadedArtifact, max_batch_tokens: int = GOLDEN_BATCH_TOKENS
) -> GoldenReport | None:
    """Blocking: score ``artifact``'s golden pairs with ``engine`` (built over that artifact),
    in batches of at most ``max_batch_tokens`` padded tokens, and return the figures; raise
    ``GoldenDrift`` (an ``ArtifactError``: a start-up refusal) when a pair drifts beyond the
    tolerance or tokenises differently. None, logged, when the artifact carries no golden pairs
    (exported before they existed)."""
    golden = golden_pairs(artifact, max_batch_tokens)
    if golden is None:
        log.info(
            "%s %s carries no golden pairs (exported before rmserve recorded them): no load "
            "check, no canary", artifact.manifest.name, artifact.manifest.version,
        )  # fmt: skip
        return None
    report = compare(golden, score_golden(engine, golden), engine.provider)
    if not report.ok:
        raise GoldenDrift(f"{artifact.folder}: {report.describe()}", report)
    log.info("%s", report.describe())
    return report
