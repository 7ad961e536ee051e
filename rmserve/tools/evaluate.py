"""``rmserve eval``: score a preference file with an exported artifact through onnxruntime and
the shared preprocessing. No torch: this measures the served model, independently of the
torch numbers training reports."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmserve.engine.session import LoadedArtifact, OrtEngine, ProviderChoice, load_artifact
from rmserve.rewards.ensemble import normalize_members
from rmserve.text.preference_data import load_preferences

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferenceScores:
    chosen: np.ndarray
    rejected: np.ndarray
    margins: np.ndarray


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = -np.logaddexp(0.0, -x)
    return result


def preference_report(scores: PreferenceScores) -> dict[str, float]:
    """Same definitions as training: ties count as wrong; loss −mean(logσ(r_w − r_l − margin))."""
    chosen = scores.chosen.astype(np.float64)
    rejected = scores.rejected.astype(np.float64)
    both = np.concatenate([chosen, rejected])
    return {
        "accuracy": float(np.mean(chosen > rejected)),
        "loss": float(-np.mean(log_sigmoid(chosen - rejected - scores.margins))),
        "margin": float(np.mean(chosen - rejected)),
        "reward_mean": float(both.mean()),
        "reward_std": float(both.std()),
    }


def evaluate_file(
    artifact: LoadedArtifact,
    data: Path,
    batch_size: int = 32,
    provider: ProviderChoice = "cpu",
    skip_bad: bool = False,
) -> dict[str, Any]:
    started = time.perf_counter()
    loaded = load_preferences(data, skip_bad=skip_bad)  # raises DataError when it holds none
    engine = OrtEngine(artifact, provider=provider)
    prompts = [p.prompt for p in loaded.pairs]
    pre = artifact.preprocessor
    chosen = pre.prepare_many(prompts, [p.chosen for p in loaded.pairs])
    rejected = pre.prepare_many(prompts, [p.rejected for p in loaded.pairs])
    rewards = engine.score_prepared(chosen + rejected, batch_size)
    members = artifact.manifest.ensemble
    if members is not None:  # an ensemble is evaluated by the mean of its normalised members
        rewards = normalize_members(
            rewards,
            [m.normalization.mean for m in members],
            [m.normalization.std for m in members],
        ).mean(axis=1)
    n = len(loaded.pairs)
    scores = PreferenceScores(
        rewards[:n], rewards[n:], np.array([p.margin for p in loaded.pairs], dtype=np.float64)
    )
    truncated = sum(w.truncated or r.truncated for w, r in zip(chosen, rejected, strict=True))
    response_truncated = sum(
        w.response_truncated or r.response_truncated for w, r in zip(chosen, rejected, strict=True)
    )
    return {
        **preference_report(scores),
        "pairs": n,
        "skipped_lines": loaded.skipped,
        "truncated_pairs": truncated,
        "response_truncated_pairs": response_truncated,
        "model": artifact.manifest.name,
        "version": artifact.manifest.version,
        "provider": engine.provider,
        "seconds": round(time.perf_counter() - started, 3),
    }


def run_eval(args: argparse.Namespace) -> int:
    artifact = load_artifact(Path(args.artifact))
    report = evaluate_file(
        artifact, Path(args.data), args.batch_size, args.provider, args.skip_bad_lines
    )
    log.info("eval of %s on %s: %s", args.artifact, args.data, report)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval", help="Score a preference JSONL with an exported artifact (onnxruntime, no torch)."
    )
    parser.add_argument("--artifact", required=True, help="Artifact folder.")
    parser.add_argument("--data", required=True, help="Preference JSONL (.jsonl or .jsonl.gz).")
    parser.add_argument("--batch-size", type=int, default=32, help="Pairs per batch (default 32).")
    parser.add_argument(
        "--provider",
        choices=["auto", "cuda", "cpu"],
        default="cpu",
        help="onnxruntime execution provider (default cpu).",
    )
    parser.add_argument(
        "--skip-bad-lines",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Skip (and count) malformed lines instead of failing.",
    )
    parser.set_defaults(handler=run_eval)
