"""Is an ensemble worth it? Accuracy, disagreement as an out-of-domain signal, and cost.

    python bench/ensemble.py [--base-model tiny] [--epochs 3] [--train-pairs 1000] [--members 3]
                             [--out FILE]

On the demo data (training/demo_data.py): trains K members with ``rmserve train --ensemble K
--bootstrap`` (seeds 0..K-1), then reports (nothing is asserted):

- held-out accuracy of each member and of the ensemble (mean of normalised members);
- how well the members' disagreement (std of z_k over members) separates in-domain held-out
  responses from perturbed and off-domain ones, as AUROC (0.5: no signal, 1: perfect);
- engine cost per pair of the ensemble vs one member, same pairs, same batches, measured
  interleaved in one run (the machine may be shared: the ratio is the figure, not the times).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rmserve.engine import OrtEngine, load_artifact
from rmserve.ensemble_math import member_stats, normalize_members
from rmserve.preference_data import load_preferences

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


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / n m)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def shuffled_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def train_members(data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from rmserve_training.ensemble_train import train_ensemble
    from rmserve_training.settings import TrainSettings

    settings = TrainSettings(
        train_data=data / "train.jsonl",
        eval_data=data / "eval.jsonl",
        out=out,
        base_model=args.base_model,
        pooling="cls",
        epochs=args.epochs,
        batch_size=16,
        lr=1e-3 if args.base_model == "tiny" else 1e-4,
        max_length=128,
        ensemble=args.members,
        bootstrap=True,
    )
    started = time.perf_counter()
    result = train_ensemble(settings)
    return {"train_seconds": round(time.perf_counter() - started, 1), **result.summary()}


def cost_ratio(
    ensemble: OrtEngine, single: OrtEngine, texts: list[tuple[str, str]]
) -> dict[str, Any]:
    prepared = single.artifact.preprocessor.prepare_many(
        [p for p, _ in texts], [r for _, r in texts]
    )
    ensemble.score_prepared(prepared)  # warm both up
    single.score_prepared(prepared)
    one, many = [], []
    for _ in range(5):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        single.score_prepared(prepared)
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        ensemble.score_prepared(prepared)
        many.append(time.perf_counter() - start)
    pairs = len(prepared)
    return {
        "pairs": pairs,
        "single_ms_per_pair": round(1000 * statistics.median(one) / pairs, 4),
        "ensemble_ms_per_pair": round(1000 * statistics.median(many) / pairs, 4),
        "ratio": round(statistics.median(many) / statistics.median(one), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-pairs", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--model-note", help="How the --artifact ensemble was trained (JSON).")
    parser.add_argument("--out", default="bench/results/ensemble-cpu.json")
    parser.add_argument(
        "--artifact",
        help="Measure this existing ensemble artifact (its members in ARTIFACT.work/member-k, as "
        "`rmserve train --ensemble` leaves them) instead of training one; the demo eval data "
        "is regenerated (seed 0).",
    )
    args = parser.parse_args()
    from rmserve_training.demo_data import write_demo_data

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo_data(root / "data", n_train=args.train_pairs, n_eval=300, seed=0)
        folder = Path(args.artifact) if args.artifact else root / "ensemble"
        training = (
            {"artifact": str(folder), "trained_here": False}
            if args.artifact
            else train_members(root / "data", folder, args)
        )
        ensemble = OrtEngine(load_artifact(folder), provider="cpu")
        member_folder = folder.with_name(folder.name + ".work") / "member-0"
        member = OrtEngine(load_artifact(member_folder), provider="cpu")
        manifest = ensemble.artifact.manifest
        assert manifest.ensemble is not None
        means = [m.normalization.mean for m in manifest.ensemble]
        stds = [m.normalization.std for m in manifest.ensemble]

        def z_of(texts: list[tuple[str, str]]) -> np.ndarray:
            raw = ensemble.score_texts([p for p, _ in texts], [r for _, r in texts])
            return normalize_members(raw, means, stds)

        pairs = load_preferences(root / "data" / "eval.jsonl").pairs
        z_chosen = z_of([(p.prompt, p.chosen) for p in pairs])
        z_rejected = z_of([(p.prompt, p.rejected) for p in pairs])
        accuracy = {
            f"member_{k}": float(np.mean(z_chosen[:, k] > z_rejected[:, k]))
            for k in range(z_chosen.shape[1])
        }
        accuracy["ensemble_mean"] = float(np.mean(z_chosen.mean(axis=1) > z_rejected.mean(axis=1)))
        accuracy["ensemble_min"] = float(np.mean(z_chosen.min(axis=1) > z_rejected.min(axis=1)))
        in_domain = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
        disagreement_in = member_stats(z_of(in_domain)).std
        perturbed = {
            "shuffled_words": [(p, shuffled_words(r, rng)) for p, r in in_domain],
            "off_domain_text": [(p.prompt, rng.choice(OFF_DOMAIN)) for p in pairs],
            "other_prompt": [
                (pairs[(i + 7) % len(pairs)].prompt, p.chosen) for i, p in enumerate(pairs)
            ],
        }
        separation = {}
        for kind, texts in perturbed.items():
            disagreement = member_stats(z_of(texts)).std
            separation[kind] = {
                "auroc": round(auroc(disagreement_in, disagreement), 4),
                "mean_std_in_domain": round(float(disagreement_in.mean()), 4),
                "mean_std_perturbed": round(float(disagreement.mean()), 4),
            }
        cost = cost_ratio(ensemble, member, in_domain[:128])
    best = max(v for k, v in accuracy.items() if k.startswith("member_"))
    result = {
        "benchmark": "ensemble",
        "machine": f"{platform.machine()} CPU, onnxruntime CPU provider; shared by several "
        "jobs while measured (compare ratios, not times)",
        "model": args.model_note
        or f"{args.members} x '{args.base_model}' full models, bootstrap, seeds 0..K-1, "
        f"{args.epochs} epochs over {args.train_pairs} demo pairs, max_length 128",
        "training": training,
        "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "ensemble_minus_best_member": round(accuracy["ensemble_mean"] - best, 4),
        "disagreement_auroc": separation,
        "cost_per_pair": cost,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
