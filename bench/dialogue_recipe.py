"""Old vs new training defaults on long multi-turn dialogues (``rmserve demo-data --format
dialogue``), in the same run, on the same data, for each seed.

Two measurements:

1. **Window analysis** (tokenisation only, exact, the whole data set): for each max_length, the
   fraction of pairs whose deciding first-turn statement is still inside the model's input after
   the shared preprocessing (prompt cut from the left). A pair whose statement is cut away shows
   the model two texts that differ only in a value drawn from one pool for both sides, so no
   model beats chance on it: held-out accuracy <= visible + (1 - visible) / 2.
2. **Training**: ``rmserve_training.train.loop.train`` with the old defaults and with the new ones
   (everything else identical), held-out accuracy and loss, last-steps train loss, per seed.

    .venv/bin/python bench/dialogue_recipe.py --out bench/results/dialogue-recipe-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tokenizers import Tokenizer

from rmserve.artifact.manifest import Preprocessing
from rmserve.text.preference_data import load_preferences
from rmserve.text.preprocess import Preprocessor
from rmserve_training.demo.dialogues import write_dialogue_data
from rmserve_training.model.backbones import resolve_backbone
from rmserve_training.settings import TrainSettings
from rmserve_training.train.loop import train

# The defaults before this recipe; every field not named here is the same in both.
OLD_DEFAULTS: dict[str, Any] = {"max_length": 256, "head_lr": None}
RECIPE_FIELDS = ("lr", "head_lr", "max_length", "epochs", "batch_size", "warmup_ratio",
                 "min_lr_ratio", "pooling", "center_coef", "weight_decay")  # fmt: skip
LAST_STEPS = 5


def new_defaults() -> dict[str, Any]:
    fields = TrainSettings.model_fields
    return {name: fields[name].default for name in RECIPE_FIELDS}


def window_analysis(data: Path, base_model: str, lengths: list[int]) -> dict[str, Any]:
    """Fraction of pairs whose first-turn statement survives truncation, per max_length."""
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    pairs = load_preferences(data).pairs
    source = resolve_backbone(base_model)
    tokenizer = Tokenizer.from_str(source.tokenizer_json)
    bare = Tokenizer.from_str(source.tokenizer_json)
    bare.no_truncation()
    bare.no_padding()
    result: dict[str, Any] = {}
    for max_length in lengths:
        preprocessor = Preprocessor(
            tokenizer, Preprocessing(join="pair", max_length=max_length, pad_token_id=0)
        )
        prepared = preprocessor.prepare_many([p.prompt for p in pairs], [p.chosen for p in pairs])
        visible = 0
        for row, pair in zip(rows, prepared, strict=True):
            needle = bare.encode(row["statement"], add_special_tokens=False).ids
            ids = pair.input_ids.tolist()
            visible += any(
                ids[i : i + len(needle)] == needle for i in range(len(ids) - len(needle) + 1)
            )
        share = visible / len(rows)
        result[str(max_length)] = {
            "statement_visible": round(share, 4),
            "accuracy_ceiling": round(share + (1 - share) / 2, 4),
            "truncated_pairs": round(sum(p.truncated for p in prepared) / len(rows), 4),
        }
    lengths_all = [len(bare.encode(p.prompt + " " + p.chosen).ids) for p in pairs]
    result["tokens_per_dialogue"] = {
        "mean": round(statistics.mean(lengths_all), 1),
        "min": min(lengths_all),
        "max": max(lengths_all),
    }
    return result


def run_one(
    recipe: str, overrides: dict[str, Any], seed: int, data: Path, work: Path, args: Any
) -> dict[str, Any]:
    out = work / f"{recipe}-seed{seed}"
    settings = TrainSettings(
        train_data=data / "train.jsonl",
        eval_data=data / "eval.jsonl",
        out=out,
        base_model=args.base_model,
        seed=seed,
        threads=args.threads,
        **overrides,
    )
    started = time.perf_counter()
    result = train(settings)
    seconds = time.perf_counter() - started
    events = [json.loads(line) for line in (out.with_name(out.name + ".work") / "metrics.jsonl")
              .read_text(encoding="utf-8").splitlines()]  # fmt: skip
    losses = [e["loss"] for e in events if e["event"] == "train"]
    row = {
        "recipe": recipe,
        "seed": seed,
        "eval_accuracy": round(result.eval_metrics["accuracy"], 4),
        "eval_loss": round(result.eval_metrics["loss"], 4),
        "train_loss_last_steps": round(statistics.mean(losses[-LAST_STEPS:]), 4),
        "train_loss_first_steps": round(statistics.mean(losses[:LAST_STEPS]), 4),
        "steps": result.steps,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def summarise(runs: list[dict[str, Any]], recipe: str) -> dict[str, Any] | None:
    mine = [r for r in runs if r["recipe"] == recipe]
    if not mine:
        return None
    return {
        key: round(statistics.mean(r[key] for r in mine), 4)
        for key in ("eval_accuracy", "eval_loss", "train_loss_last_steps", "seconds")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=2000, help="Training dialogues.")
    parser.add_argument("--eval", type=int, default=400, help="Held-out dialogues.")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="None: window analysis only."
    )
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--base-model", default="minilm")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--note", default="", help="Free text stored in the JSON (the machine).")
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="dialogue-recipe-"))
    data = work / "data"
    write_dialogue_data(data, n_train=args.train, n_eval=args.eval, seed=args.data_seed)
    new = new_defaults()
    old = {**new, **OLD_DEFAULTS}
    windows = window_analysis(
        data / "eval.jsonl",
        args.base_model,
        sorted({128, 384, old["max_length"], new["max_length"]}),
    )
    print(json.dumps({"windows": windows}), flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # old and new back to back per seed: the same load for both
        runs.append(run_one("old", old, seed, data, work, args))
        runs.append(run_one("new", new, seed, data, work, args))
        write_report(args, old, new, windows, runs, time.perf_counter() - started)
    if not runs:
        write_report(args, old, new, windows, runs, 0.0)


def write_report(
    args: Any,
    old: dict[str, Any],
    new: dict[str, Any],
    windows: dict[str, Any],
    runs: list[dict[str, Any]],
    seconds: float,
) -> None:
    """Written after every seed, so an interrupted run still leaves its finished seeds."""
    old_summary, new_summary = summarise(runs, "old"), summarise(runs, "new")
    report = {
        "bench": "dialogue_recipe",
        "data": {
            "format": "dialogue (Anthropic HH)",
            "train_pairs": args.train,
            "eval_pairs": args.eval,
            "data_seed": args.data_seed,
        },
        "base_model": args.base_model,
        "old_defaults": old,
        "new_defaults": new,
        "window_analysis_eval": windows,
        "runs": runs,
        "old_mean": old_summary,
        "new_mean": new_summary,
        "accuracy_gain": (
            round(new_summary["eval_accuracy"] - old_summary["eval_accuracy"], 4)
            if old_summary and new_summary
            else None
        ),
        "new_wins_per_seed": sum(
            n["eval_accuracy"] > o["eval_accuracy"]
            for o, n in zip(runs[::2], runs[1::2], strict=True)
        ),
        "seeds": sorted({r["seed"] for r in runs}),
        "total_seconds": round(seconds, 1),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "note": args.note,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("old_mean", "new_mean", "accuracy_gain")}))


if __name__ == "__main__":
    main()
