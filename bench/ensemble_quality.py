"""What bench/ensemble.py measures on one ensemble artifact: held-out accuracy of each member and
of the ensemble, disagreement as an out-of-domain signal (AUROC), and engine cost per pair."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmserve.engine.session import OrtEngine
from rmserve.rewards.ensemble import member_stats, normalize_members
from rmserve.text.preference_data import PreferencePair

OFF_DOMAIN = (
    "def add(a, b):\n    return a + b",
    "SELECT name FROM users WHERE id = 7;",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "BUY NOW!!! limited offer, click here: http://example.com/deal",
    "Chapter 3. The rain had not stopped for three days when the ship came in.",
    "x = [i * i for i in range(10)]",
    "|||| ---- #### 0101 1101 0010",
    "Dear Sir or Madam, please find attached the invoice for March.",
)

Texts = list[tuple[str, str]]


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / n m)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def shuffled_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


@dataclass(frozen=True)
class HeldOut:
    """The held-out pairs and the perturbed responses every ensemble is measured on."""

    chosen: Texts
    rejected: Texts
    perturbed: dict[str, Texts]

    @classmethod
    def build(cls, pairs: Sequence[PreferencePair], seed: int = 0) -> HeldOut:
        rng = random.Random(seed)
        chosen = [(p.prompt, p.chosen) for p in pairs]
        rejected = [(p.prompt, p.rejected) for p in pairs]
        perturbed = {
            "shuffled_words": [(p, shuffled_words(r, rng)) for p, r in chosen + rejected],
            "off_domain_text": [(p.prompt, rng.choice(OFF_DOMAIN)) for p in pairs],
            "other_prompt": [
                (pairs[(i + 7) % len(pairs)].prompt, p.chosen) for i, p in enumerate(pairs)
            ],
        }
        return cls(chosen, rejected, perturbed)


def normalized(engine: OrtEngine, texts: Texts) -> np.ndarray:
    """[N, K] member rewards, each normalised by that member's held-out stats."""
    members = engine.artifact.manifest.ensemble
    assert members is not None, "not an ensemble artifact"
    raw = engine.score_texts([p for p, _ in texts], [r for _, r in texts])
    return normalize_members(
        raw, [m.normalization.mean for m in members], [m.normalization.std for m in members]
    )


def quality(engine: OrtEngine, held_out: HeldOut) -> dict[str, Any]:
    """Accuracy per member and of the ensemble; disagreement AUROC per perturbation; how
    alike the members are (mean pairwise Pearson correlation of z over held-out responses)."""
    z_chosen, z_rejected = (
        normalized(engine, held_out.chosen),
        normalized(engine, held_out.rejected),
    )
    members = z_chosen.shape[1]
    accuracy = {
        f"member_{k}": float(np.mean(z_chosen[:, k] > z_rejected[:, k])) for k in range(members)
    }
    best = max(accuracy.values())
    accuracy["ensemble_mean"] = float(np.mean(z_chosen.mean(axis=1) > z_rejected.mean(axis=1)))
    accuracy["ensemble_min"] = float(np.mean(z_chosen.min(axis=1) > z_rejected.min(axis=1)))
    z_in = np.concatenate([z_chosen, z_rejected])
    correlation = np.corrcoef(z_in.T)[np.triu_indices(members, k=1)]
    disagreement_in = member_stats(z_in).std
    separation = {}
    for kind, texts in held_out.perturbed.items():
        disagreement = member_stats(normalized(engine, texts)).std
        separation[kind] = {
            "auroc": round(auroc(disagreement_in, disagreement), 4),
            "mean_std_in_domain": round(float(disagreement_in.mean()), 4),
            "mean_std_perturbed": round(float(disagreement.mean()), 4),
        }
    return {
        "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "ensemble_minus_best_member": round(accuracy["ensemble_mean"] - best, 4),
        "mean_member_correlation": round(float(correlation.mean()), 4),
        "disagreement_auroc": separation,
    }


def cost_per_pair(engines: dict[str, OrtEngine], texts: Texts, rounds: int = 5) -> dict[str, Any]:
    """Engine seconds per pair of each engine on the same pairs and batches, interleaved round
    by round so all see the same machine load; ratios against the first engine."""
    first = next(iter(engines.values()))
    prepared = first.artifact.preprocessor.prepare_many(
        [p for p, _ in texts], [r for _, r in texts]
    )
    for engine in engines.values():  # warm-up
        engine.score_prepared(prepared)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.score_prepared(prepared)
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    baseline = next(iter(medians.values()))
    return {
        "pairs": len(prepared),
        "rounds": rounds,
        "ms_per_pair": {n: round(1000 * m / len(prepared), 4) for n, m in medians.items()},
        "ratio_to_" + next(iter(engines)): {n: round(m / baseline, 3) for n, m in medians.items()},
    }
