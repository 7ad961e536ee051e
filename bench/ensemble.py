"""Is an ensemble worth it, and which kind? Full members vs heads on a shared backbone.

    python bench/ensemble.py [--base-model minilm] [--epochs 2] [--train-pairs 400]
                             [--members 3] [--kinds members,shared] [--work DIR] [--reuse]
                             [--train-only] [--out FILE]

On the demo data (rmserve_training/demo/data.py, seed 0, 300 held-out pairs) trains, with the same
settings, data and seeds, ``rmserve train --ensemble K --bootstrap`` (K full members, seeds
0..K-1) and ``... --ensemble-kind shared`` (one backbone, K heads, each weighting the pairs by
its own resample), then reports for both (nothing is asserted):

- held-out accuracy of each member / head and of the ensemble (mean and min of normalised z);
- how well the members' disagreement (std of z_k over members) separates in-domain held-out
  responses from perturbed and off-domain ones, as AUROC (0.5: no signal, 1: perfect), and how
  alike the members are (mean pairwise correlation of z);
- engine cost per pair of each ensemble vs one single model (full member 0), same pairs and
  batches, interleaved in one run (the machine may be shared: the ratio is the figure);
- training wall seconds of each kind (train, export or combine, final eval).

Trained artifacts stay in ``--work`` (WORK/KIND/ensemble, and WORK/KIND/training.json with the
training figures); ``--reuse`` measures those instead of training again, and ``--train-only``
stops after training: so the training of each kind and the evaluation can run separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ensemble_quality import HeldOut, cost_per_pair, quality

from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preference_data import load_preferences

KINDS = ("members", "shared")


def train_kind(kind: str, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from rmserve_training.ensemble.train import train_ensemble
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
        ensemble_kind=kind,
        seed=args.seed,
    )
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = train_ensemble(settings)
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        **result.summary(),
    }


def trained(kind: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The training record of KIND, training it unless ``--reuse`` finds one in WORK."""
    record = work / kind / "training.json"
    if args.reuse and record.is_file():
        summary: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
        return summary
    summary = train_kind(kind, work / "data", work / kind / "ensemble", args)
    record.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="minilm")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-pairs", type=int, default=400)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="Members use seed .. seed+K-1.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Which kinds to train.")
    parser.add_argument("--work", help="Folder for data and trained artifacts (default: temp).")
    parser.add_argument("--reuse", action="store_true", help="Reuse what --work holds.")
    parser.add_argument("--train-only", action="store_true", help="Stop after training.")
    parser.add_argument("--out", default="bench/results/ensemble-minilm-cpu.json")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        parser.error(f"--kinds: each of {', '.join(KINDS)}")
    from rmserve_training.demo.data import write_demo_data

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if not (work / "data" / "eval.jsonl").is_file():
            write_demo_data(work / "data", n_train=args.train_pairs, n_eval=300, seed=0)
        for kind in KINDS:
            (work / kind).mkdir(parents=True, exist_ok=True)
        training = {kind: trained(kind, work, args) for kind in kinds}
        if args.train_only:
            json.dump(training, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        load_before = os.getloadavg()
        held_out = HeldOut.build(load_preferences(work / "data" / "eval.jsonl").pairs)
        ensembles = {
            k: OrtEngine(load_artifact(work / k / "ensemble"), provider="cpu") for k in KINDS
        }
        single = OrtEngine(
            load_artifact(work / "members" / "ensemble.work" / "member-0"), provider="cpu"
        )
        results = {kind: quality(engine, held_out) for kind, engine in ensembles.items()}
        cost = cost_per_pair({"single": single, **ensembles}, held_out.chosen[:128])
        load_after = os.getloadavg()
        records = {
            kind: json.loads((work / kind / "training.json").read_text(encoding="utf-8"))
            for kind in KINDS
        }
    result = {
        "benchmark": "ensemble",
        "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores), onnxruntime CPU "
        "provider; training and measurement each under the shared CPU lock",
        "model": f"{args.members} members of '{args.base_model}' per kind, --bootstrap, seeds "
        f"{args.seed}..{args.seed}+K-1, {args.epochs} epochs over {args.train_pairs} demo "
        "pairs, batch 16, lr "
        f"{'1e-3' if args.base_model == 'tiny' else '1e-4'}, cls pooling, max_length 128; "
        "held-out: 300 demo eval pairs",
        "kinds": {
            "members": "K full models (rmserve train --ensemble K --bootstrap)",
            "shared": "one backbone + K linear heads trained jointly (--ensemble-kind shared)",
        },
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "training": records,
        "quality": results,
        "cost_per_pair": cost,
        "summary": {
            kind: {
                "accuracy": results[kind]["accuracy"],
                "ensemble_minus_best_member": results[kind]["ensemble_minus_best_member"],
                "auroc": {p: v["auroc"] for p, v in results[kind]["disagreement_auroc"].items()},
                "cost_ratio_to_single": cost["ratio_to_single"][kind],
                "training_wall_seconds": records[kind]["wall_seconds"],
            }
            for kind in KINDS
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
