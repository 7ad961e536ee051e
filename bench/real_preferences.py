"""Training recipes on real human preferences: Anthropic HH-RLHF dialogues, not data this project
generates. Each recipe is today's ``rmserve train`` defaults with a few fields changed; each runs
for several seeds on one fixed split, and every run lands in one JSON file (re-running adds or
replaces (recipe, seed) rows, so a long search can be done in pieces).

The data is not in this repository (licence and size). Get it once, outside the checkout:

    git clone https://github.com/anthropics/hh-rlhf /work/data/hh-rlhf-repo   # MIT licence
    mkdir -p /work/data/hh-rlhf
    cp /work/data/hh-rlhf-repo/harmless-base/test.jsonl.gz \\
       /work/data/hh-rlhf/harmless-base-test.jsonl.gz

``harmless-base/test.jsonl.gz`` is a plain git blob in that repository (2,312 pairs); the other
splits are Git LFS objects and need ``git lfs pull`` (``--source helpful-base`` then reads
``helpful-base-train.jsonl.gz`` and ``helpful-base-test.jsonl.gz``). Files are checked against
what the repository's tree at commit 354e5c3 names: the git blob id (sha1 of "blob SIZE\\0" +
bytes) of the plain blob, the sha256 oid of each LFS pointer.

The split (``--source harmless-base``): pairs whose chosen and rejected texts are identical are
dropped (no preference to learn), the rest shuffled with ``random.Random(split_seed)``; the first
``--train-pairs`` train, the next ``--eval-pairs`` are held out.

    nice -n 19 .venv/bin/python bench/real_preferences.py --data /work/data/hh-rlhf \\
        --out bench/results/real-preferences-cpu.json --recipes today before --seeds 0 1 2

``--recipes`` names entries of ``RECIPES``; ``probe`` is special: the backbone is frozen (its
pooled states computed once) and only a linear head is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# (file name in --data, its id in the tree of anthropics/hh-rlhf at 354e5c3: a git blob id
# (40 hex) for a plain blob, an LFS pointer's sha256 oid (64 hex) for an LFS object)
SOURCES: dict[str, dict[str, tuple[str, str]]] = {
    "harmless-base": {
        "all": ("harmless-base-test.jsonl.gz", "a616e6a27660ded23c5ce0e585a3e4cf0d761f0e"),
    },
    "helpful-base": {  # LFS objects: the oids of the pointers in the repository
        "train": (
            "helpful-base-train.jsonl.gz",
            "518a5bf288456fc9f3b7c980c54116fba0c52f274d3f4d344675d83e4058f6f4",
        ),
        "eval": (
            "helpful-base-test.jsonl.gz",
            "8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b",
        ),
    },
}

# Today's defaults are TrainSettings' own; each recipe names only what it changes.
RECIPES: dict[str, dict[str, Any]] = {
    "today": {},
    "today-onepass": {"micro_batch": 0},  # batches of 16 in one forward pass: ~13.5 GB peak
    "before": {"max_length": 256},  # the defaults before the dialogue recipe (issue 25)
    "lr3e-5": {"lr": 3e-5},
    "lr5e-5": {"lr": 5e-5},
    "lr2e-4": {"lr": 2e-4},
    "epochs2": {"epochs": 2},
    "epochs3": {"epochs": 3},
    "epochs2-lr5e-5": {"epochs": 2, "lr": 5e-5},
    "warmup0": {"warmup_ratio": 0.0},
    "warmup0.3": {"warmup_ratio": 0.3},
    "head_lr1e-3": {"head_lr": 1e-3},
    "cls": {"pooling": "cls"},
    "len256": {"max_length": 256},
    "len384": {"max_length": 384},
    "wd0": {"weight_decay": 0.0},
    "wd0.1": {"weight_decay": 0.1},
    "center": {"center_coef": 0.01},
    "ls0.1": {"label_smoothing": 0.1},
    "ls0.2": {"label_smoothing": 0.2},
    "batch8": {"batch_size": 8},
    "batch32": {"batch_size": 32},
    "lora16": {"lora_rank": 16, "lr": 5e-4},
    "shared3": {"ensemble": 3, "ensemble_kind": "shared", "bootstrap": True},
    "members3": {"ensemble": 3, "ensemble_kind": "members", "bootstrap": True},
    "probe": {"freeze": True},
}
PROBE_EPOCHS = 30
PROBE_LR = 1e-3
LAST_STEPS = 10
PROBE_FEATURES: dict[tuple[Any, ...], dict[str, Any]] = {}  # per process, shared by seeds


def cpu_model() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_record import cpu_model as model

    return model()


def file_id(path: Path, length: int) -> str:
    """sha256 of the bytes (length 64), or git's blob id, sha1 of b"blob SIZE\\0" + bytes (40)."""
    digest = hashlib.sha256() if length == 64 else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(data: Path, name: str, part: str, verify: bool) -> list[dict[str, Any]]:
    file_name, expected = SOURCES[name][part]
    path = data / file_name
    if not path.is_file():
        sys.exit(f"{path} is missing. How to get it:\n\n{__doc__.split('The split')[0]}")
    if verify and file_id(path, len(expected)) != expected:
        sys.exit(f"{path}: not the published file {expected} (use --no-verify to go on)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["chosen"] != r["rejected"]]


def prepare_split(args: Any, work: Path) -> dict[str, Any]:
    """train.jsonl and eval.jsonl under ``work/data``; returns what the split is."""
    rng = random.Random(args.split_seed)
    if "all" in SOURCES[args.source]:
        rows = read_source(args.data, args.source, "all", args.verify)
        kept = len(rows)
        rng.shuffle(rows)
        train_rows = rows[: args.train_pairs]
        eval_rows = rows[args.train_pairs : args.train_pairs + args.eval_pairs]
    else:
        train_all = read_source(args.data, args.source, "train", args.verify)
        eval_all = read_source(args.data, args.source, "eval", args.verify)
        kept = len(train_all) + len(eval_all)
        rng.shuffle(train_all)
        rng.shuffle(eval_all)
        train_rows, eval_rows = train_all[: args.train_pairs], eval_all[: args.eval_pairs]
    if len(train_rows) < args.train_pairs or len(eval_rows) < args.eval_pairs:
        sys.exit(f"only {kept} usable pairs: ask for fewer --train-pairs / --eval-pairs")
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    split: dict[str, Any] = {"source": args.source, "split_seed": args.split_seed}
    for part, part_rows in (("train", train_rows), ("eval", eval_rows)):
        path = folder / f"{part}.jsonl"
        text = "".join(json.dumps({"chosen": r["chosen"], "rejected": r["rejected"]}) + "\n"
                       for r in part_rows)  # fmt: skip
        path.write_text(text, encoding="utf-8")
        split[f"{part}_pairs"] = len(part_rows)
        split[f"{part}_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    split["usable_pairs_in_source"] = kept
    return split


def machine_load() -> float:
    return round(os.getloadavg()[0], 2)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_events(work_dir: Path) -> list[dict[str, Any]]:
    lines = (work_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def run_train(settings: Any) -> dict[str, Any]:
    from rmserve_training.ensemble.train import train_ensemble
    from rmserve_training.train.loop import train

    row: dict[str, Any] = {}
    if settings.ensemble > 1:
        ensemble = train_ensemble(settings)  # accuracy of the artifact: mean of normalised members
        summary = ensemble.summary()
        row["eval_accuracy"] = round(ensemble.eval_metrics["accuracy"], 4)
        row["member_accuracy"] = [
            round(m.get("eval_accuracy") or 0.0, 4)
            for m in summary.get("members", summary.get("heads", []))
        ]
        return row
    result = train(settings)
    events = read_events(settings.resolved_work_dir())
    losses = [e["loss"] for e in events if e["event"] == "train"]
    data_event = next(e for e in events if e["event"] == "data")
    row.update(
        eval_accuracy=round(result.eval_metrics["accuracy"], 4),
        eval_loss=round(result.eval_metrics["loss"], 4),
        eval_margin=round(result.eval_metrics["margin"], 4),
        train_loss_first_steps=round(statistics.mean(losses[:LAST_STEPS]), 4),
        train_loss_last_steps=round(statistics.mean(losses[-LAST_STEPS:]), 4),
        steps=result.steps,
        eval_truncated_pairs=data_event["eval_truncated_pairs"],
        train_truncated_pairs=data_event["train_truncated_pairs"],
        eval_curve=[
            round(e["accuracy"], 4) for e in events if e["event"] == "eval"
        ],  # per epoch by default
    )
    return row


def run_probe(settings: Any) -> dict[str, Any]:
    """Frozen backbone: pooled states computed once (eval mode), then a linear head trained with
    the Bradley-Terry loss (AdamW, PROBE_LR, PROBE_EPOCHS, batches of ``batch_size``)."""
    import torch
    from torch import nn

    from rmserve_training.train.checkpoints import build_model
    from rmserve_training.train.encoded import encode, score_all
    from rmserve_training.train.inputs import load_train_inputs
    from rmserve_training.train.loss import bradley_terry_loss, preference_metrics

    if settings.threads:
        torch.set_num_threads(settings.threads)
    key = (settings.base_model, settings.pooling, settings.max_length)
    reused = key in PROBE_FEATURES
    if not reused:  # eval mode: the pooled states do not depend on the seed
        inputs = load_train_inputs(settings)
        config = json.loads(inputs.source.config.to_json_string())
        model = build_model(config, settings.pooling, settings.seed, settings.base_model)
        model.head = nn.Identity()  # score_all now returns pooled states [N, H]
        pad = inputs.texts.preprocessing.pad_token_id
        PROBE_FEATURES[key] = {
            part: score_all(model, encode(inputs.preprocessor, data.pairs), 16, pad)
            for part, data in (("train", inputs.train_set), ("eval", inputs.eval_set))
        }
    feats = PROBE_FEATURES[key]
    torch.manual_seed(settings.seed)
    head = nn.Linear(feats["train"][0].shape[1], 1)
    nn.init.normal_(head.weight, std=1.0 / (head.in_features + 1) ** 0.5)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW(head.parameters(), lr=PROBE_LR, weight_decay=0.01)
    w_train, l_train = feats["train"]
    for _ in range(PROBE_EPOCHS):
        for index in torch.randperm(len(w_train)).split(settings.batch_size):
            loss = bradley_terry_loss(
                head(w_train[index]).squeeze(-1), head(l_train[index]).squeeze(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        w_eval, l_eval = (head(x).squeeze(-1) for x in feats["eval"])
        metrics = preference_metrics(w_eval, l_eval)
        eval_loss = bradley_terry_loss(w_eval, l_eval).item()
    return {
        "eval_accuracy": round(metrics["accuracy"], 4),
        "eval_loss": round(eval_loss, 4),
        "probe": {"epochs": PROBE_EPOCHS, "lr": PROBE_LR, "features_reused": reused},
    }


def run_one(recipe: str, seed: int, work: Path, args: Any) -> dict[str, Any]:
    from rmserve_training.settings import TrainSettings

    overrides = dict(RECIPES[recipe])
    freeze = overrides.pop("freeze", False)
    micro = overrides.pop("micro_batch", args.micro_batch)
    if micro and not freeze:  # the same global batch, in smaller pieces (memory)
        batch = overrides.pop("batch_size", TrainSettings.model_fields["batch_size"].default)
        if batch % micro:
            sys.exit(f"micro-batch {micro} does not divide {recipe}'s batch {batch}")
        overrides.update(batch_size=micro, grad_accum=batch // micro, eval_batch_size=micro * 4)
    out = work / f"{recipe}-seed{seed}"
    settings = TrainSettings(
        train_data=work / "data" / "train.jsonl",
        eval_data=work / "data" / "eval.jsonl",
        out=out,
        base_model=args.base_model,
        seed=seed,
        threads=args.threads,
        **overrides,
    )
    load_before = machine_load()
    peak_before = peak_rss_gb()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    row = run_probe(settings) if freeze else run_train(settings)
    seconds = time.perf_counter() - started
    row = {
        "recipe": recipe,
        "seed": seed,
        **row,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_before, 1),  # all threads; steadier than wall
        "threads": args.threads,
        "load_average_1m": [load_before, machine_load()],
        "micro_batch": {k: settings.model_dump()[k] for k in ("batch_size", "grad_accum")},
        "peak_rss_gb_so_far": [peak_before, peak_rss_gb()],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "eval_curve"}), flush=True)
    return row


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe: mean / spread of held-out accuracy, and per seed against today's defaults
    (the ``today`` row of that seed, else ``today-onepass``: the same recipe in one pass)."""
    today = {r["seed"]: r for r in runs if r["recipe"] == "today-onepass"}
    today.update({r["seed"]: r for r in runs if r["recipe"] == "today"})
    result: dict[str, Any] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        mine = sorted((r for r in runs if r["recipe"] == recipe), key=lambda r: r["seed"])
        acc = [r["eval_accuracy"] for r in mine]
        entry: dict[str, Any] = {
            "seeds": [r["seed"] for r in mine],
            "accuracy_mean": round(statistics.mean(acc), 4),
            "accuracy_std": round(statistics.stdev(acc), 4) if len(acc) > 1 else None,
            "accuracy_min": min(acc),
            "accuracy_max": max(acc),
            "seconds_mean": round(statistics.mean(r["seconds"] for r in mine), 1),
        }
        paired = [(r, today[r["seed"]]) for r in mine if r["seed"] in today]
        if paired and recipe not in ("today", "today-onepass"):
            deltas = [round(r["eval_accuracy"] - t["eval_accuracy"], 4) for r, t in paired]
            cpu = [(r.get("cpu_seconds"), t.get("cpu_seconds")) for r, t in paired]
            entry["vs_today"] = {
                "seeds": [r["seed"] for r, _ in paired],
                "baseline": [t["recipe"] for _, t in paired],
                "accuracy_delta_per_seed": deltas,
                "accuracy_delta_mean": round(statistics.mean(deltas), 4),
                "wins": sum(d > 0 for d in deltas),
                "wall_time_ratio": round(
                    statistics.mean(r["seconds"] for r, _ in paired)
                    / statistics.mean(t["seconds"] for _, t in paired),
                    2,
                ),
                "cpu_time_ratio": round(sum(a for a, _ in cpu) / sum(b for _, b in cpu), 2)
                if all(a and b for a, b in cpu)
                else None,
            }
        result[recipe] = entry
    return result


def write_report(args: Any, split: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    from rmserve_training.settings import TrainSettings

    fields = TrainSettings.model_fields
    defaults = {
        name: fields[name].default
        for name in ("lr", "head_lr", "epochs", "batch_size", "warmup_ratio", "min_lr_ratio",
                     "weight_decay", "pooling", "max_length", "center_coef", "label_smoothing",
                     "max_grad_norm")
    }  # fmt: skip
    report = {
        "bench": "real_preferences",
        "data": split,
        "base_model": args.base_model,
        "today_defaults": defaults,
        "recipes": {r: RECIPES[r] for r in dict.fromkeys(run["recipe"] for run in runs)},
        "summary": summary(runs),
        "runs": runs,
        "machine": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "note": args.note,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def merged_runs(args: Any, split: dict[str, Any], rows: list[dict[str, Any]]) -> list[Any]:
    """The file's runs with ``rows`` in place of any of the same (recipe, seed)."""
    runs: list[dict[str, Any]] = []
    if args.out.is_file():
        previous = json.loads(args.out.read_text(encoding="utf-8"))
        same = {k: previous["data"].get(k) for k in split} == split
        if not same or previous["base_model"] != args.base_model:
            sys.exit(f"{args.out} holds runs on other data or another backbone: pick another --out")
        runs = previous["runs"]
    keys = {(r["recipe"], r["seed"]) for r in rows}
    return [r for r in runs if (r["recipe"], r["seed"]) not in keys] + rows


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"real-preferences-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Folder with the HH-RLHF files.")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (rows merged).")
    parser.add_argument("--source", choices=sorted(SOURCES), default="harmless-base")
    parser.add_argument("--train-pairs", type=int, default=1800)
    parser.add_argument("--eval-pairs", type=int, default=512)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--recipes", nargs="+", default=["today", "before"], choices=RECIPES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base-model", default="minilm")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=4,
        help="Pairs per forward pass; each recipe's batch is reached by gradient accumulation "
        "(the same steps and loss; 0: the recipe's batch in one pass). At the default "
        "max_length 512, one batch of 16 HH pairs peaked at 13.5 GB RSS with eager attention.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Torch threads (0: torch's default). 1: on a busy 2-core machine a 2-thread process "
        "loses most of its time to preempted threads (docs/benchmarks/train-throughput.md).",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--note", default="", help="Free text stored in the JSON (the machine).")
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="real-preferences-"))
    split = prepare_split(args, work)
    print(json.dumps({"split": split}), flush=True)
    runs = merged_runs(args, split, [])  # refuses a file of other data before any training
    for seed in args.seeds:  # recipes back to back per seed: a similar load for each
        for recipe in args.recipes:
            row = run_one(recipe, seed, work, args)
            with locked(args.out):  # several invocations may add to one file at once
                runs = merged_runs(args, split, [row])
                write_report(args, split, runs)
    print(json.dumps(summary(runs), indent=1))


if __name__ == "__main__":
    main()
