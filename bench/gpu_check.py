"""GPU check (issue 10, part 6): build a MiniLM-shaped encoder RM and a Qwen3-0.6B-shaped decoder
RM (fp32 and fp16), measure the bare engine and ``rmserve serve`` on each, write one JSON.

    python bench/gpu_check.py --out DIR --provider cuda --minilm-config FOLDER   # a GPU machine
    python bench/gpu_check.py --out DIR --provider cpu --size tiny \\
        --encoder-artifact ARTIFACT                                             # the CPU test

Offline: every model is built here with random weights (the MiniLM-shaped backbone from a
folder holding MiniLM's config.json and tokenizer.json, trained for one short epoch on demo
data; the Qwen3 builder of ``tests/support/qwen3_rm.py``). The JSON (``DIR/gpu_check.json``) is
rewritten after every stage, so a run cut short by its time limit still leaves what it measured;
a stage that would not fit in what is left of ``--budget-s`` is recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from gpu_measure import load_pairs, long_pairs_engine, raw_engine, served

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.qwen3_rm import QWEN3_0_6B, WORDS, write_qwen3_rm  # noqa: E402

QWEN3_TINY = {
    "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "max_position_embeddings": 512,
}  # fmt: skip
# fp16's bound in the export check (rmserve_training/export/check.py): |Δ| ≤ 1e-2 + 1e-2·|r_fp32|.
FP16_ATOL = FP16_RTOL = 1e-2
# Serving limits for the check: bigger batches than the CPU defaults (GPUs favour them).
SERVE_FLAGS = {
    "full": ["--max-batch-size", "128", "--max-batch-tokens", "65536",
             "--max-padding-ratio", "1.5", "--warmup-runs", "1", "--max-request-pairs", "4096"],
    "tiny": ["--max-batch-size", "32", "--max-batch-tokens", "4096",
             "--max-padding-ratio", "1.5", "--warmup-runs", "1", "--max-request-pairs", "4096"],
}  # fmt: skip


class Report:
    """The JSON result, rewritten to disk after every change."""

    def __init__(self, path: Path, started: float, budget_s: float) -> None:
        self.path, self.started, self.budget_s = path, started, budget_s
        self.data: dict[str, Any] = {"stages": {}, "skipped": [], "errors": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data["elapsed_seconds"] = round(time.perf_counter() - self.started, 1)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")

    def stage(self, name: str, need_s: float) -> bool:
        """True when ``name`` should run: it is expected to fit in what is left."""
        if self.left() < need_s:
            self.data["skipped"].append(f"{name} (needs ~{need_s:.0f}s, {self.left():.0f}s left)")
            self.put("skipped", self.data["skipped"])
            return False
        return True


def cli(*argv: str) -> float:
    """Run ``rmserve ARGV`` to completion; its wall time. Raises with its output on failure."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rmserve.cli", *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rmserve {argv[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def build_encoder(minilm_config: Path, work: Path, max_length: int) -> tuple[Path, dict[str, Any]]:
    """A MiniLM-shaped backbone with random weights (MiniLM's config and tokenizer, carried in
    ``minilm_config``), trained one short epoch through ``rmserve train`` like the demo."""
    import torch
    from transformers import AutoConfig, AutoModel

    backbone, data, out = work / "minilm-backbone", work / "demo-data", work / "minilm-artifact"
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(minilm_config, local_files_only=True)
    AutoModel.from_config(config).save_pretrained(backbone)
    shutil.copy(minilm_config / "tokenizer.json", backbone / "tokenizer.json")
    cli("demo-data", "--out", str(data), "--train", "256", "--eval", "64")
    seconds = cli(
        "train", "--train-data", str(data / "train.jsonl"), "--eval-data",
        str(data / "eval.jsonl"), "--out", str(out), "--base-model", str(backbone),
        "--epochs", "1", "--batch-size", "16", "--max-length", str(max_length),
    )  # fmt: skip
    return out, {"train_and_export_seconds": round(seconds, 1)}


def build_decoder(
    size: str, layers: int | None, work: Path, max_length: int
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The Qwen3-shaped RM written once, then imported as fp32 and fp16 side by side."""
    model = work / "qwen3-rm"
    start = time.perf_counter()
    shape = dict(QWEN3_0_6B if size == "full" else QWEN3_TINY)
    if layers is not None:
        shape["num_hidden_layers"] = layers
    write_qwen3_rm(model, **shape)
    figures: dict[str, Any] = {
        "shape": shape,
        "write_hf_model_seconds": round(time.perf_counter() - start, 1),
    }
    outs = {dtype: work / f"qwen3-{dtype}" for dtype in ("fp32", "fp16")}

    def run(dtype: str) -> float:
        return cli("import-hf", "--model", str(model), "--out", str(outs[dtype]),
                   "--max-length", str(max_length), "--dtype", dtype)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        seconds = dict(zip(outs, pool.map(run, outs), strict=True))
    for dtype, path in outs.items():
        manifest = json.loads((path / "manifest.json").read_text())
        figures[dtype] = {
            "import_hf_seconds": round(seconds[dtype], 1),
            "artifact_bytes": sum(f.stat().st_size for f in path.iterdir()),
            "parameters": manifest.get("parameters"),
            "export_parity": manifest.get("parity"),
        }
    shutil.rmtree(model, ignore_errors=True)
    return outs, figures


def rank_agreement(ours: np.ndarray, reference: np.ndarray) -> float:
    i, j = np.triu_indices(len(reference), k=1)
    differ = reference[i] != reference[j]
    same = np.sign(ours[i] - ours[j]) == np.sign(reference[i] - reference[j])
    return float(same[differ].mean()) if differ.any() else 1.0


def fp16_parity(fp32: list[float], fp16: list[float]) -> dict[str, Any]:
    a, b = np.asarray(fp32), np.asarray(fp16)
    return {
        "pairs": len(a),
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "rank_agreement": rank_agreement(b, a),
        "within_export_bound": bool(np.all(np.abs(a - b) <= FP16_ATOL + FP16_RTOL * np.abs(a))),
        "bound": f"|Δ| ≤ {FP16_ATOL} + {FP16_RTOL}·|r_fp32| (the fp16 export check's)",
    }


def environment(provider: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
        "provider_requested": provider,
    }  # fmt: skip
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_check.json.")
    parser.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: OUT/work).")
    parser.add_argument("--encoder-artifact", type=Path, help="Serve this encoder artifact.")
    parser.add_argument("--minilm-config", type=Path, help="MiniLM config.json+tokenizer.json.")
    parser.add_argument("--max-length", type=int, default=256, help="Artifacts' max_length.")
    parser.add_argument(
        "--qwen-layers", type=int, help="Decoder layers (default: the shape's own, 28 at full)."
    )
    parser.add_argument("--pairs", type=int, default=1024, help="Pairs in the load set.")
    parser.add_argument("--seconds", type=float, default=4.0, help="Per throughput figure.")
    parser.add_argument("--callers", type=int, default=256, help="Concurrent Score callers.")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument(
        "--long-lengths", default="8192,16384",
        help="Tokens of the long pairs the fused-attention decoder scores alone (fp16 and fp32).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_check.json", started, args.budget_s)
    report.put("environment", environment(args.provider))
    report.put("settings", {k: str(v) for k, v in vars(args).items()} | {
        "serve_flags": SERVE_FLAGS[args.size],
        "note": "random-weight models; rewards are meaningless, parity and speed are not",
    })  # fmt: skip
    pairs = load_pairs(WORDS, args.pairs, seed=0)  # words both tokenizers know
    batch_sizes = [1, 8, 32, 128] if args.size == "full" else [1, 8]
    artifacts: dict[str, Path] = {}
    with ThreadPoolExecutor(1) as pool:  # the decoder builds while the encoder is measured
        decoder = pool.submit(build_decoder, args.size, args.qwen_layers, work, args.max_length)
        try:
            if args.encoder_artifact is not None:
                artifacts["minilm-fp32"] = args.encoder_artifact
            elif args.minilm_config is not None:
                path, figures = build_encoder(args.minilm_config, work, args.max_length)
                artifacts["minilm-fp32"] = path
                report.data["stages"]["build_minilm"] = figures
        except Exception as e:  # recorded; the decoder still runs
            report.data["errors"]["build_minilm"] = repr(e)
        report.put("stages", report.data["stages"])
        if "minilm-fp32" in artifacts:
            measure(report, "minilm-fp32", artifacts["minilm-fp32"], args, pairs, batch_sizes)
            # The CPU was busy importing the decoder meanwhile: said beside the figures.
            report.data["stages"]["minilm-fp32"]["decoder_build_ran_meanwhile"] = True
        try:
            outs, figures = decoder.result(timeout=max(1.0, report.left()))
            report.data["stages"]["build_qwen3"] = figures
            artifacts |= {f"qwen3-{dtype}": path for dtype, path in outs.items()}
        except TimeoutError:
            report.data["errors"]["build_qwen3"] = "not built within --budget-s (--qwen-layers?)"
            report.put("complete", False)
            print(json.dumps(summary(report.data), indent=2), flush=True)
            os._exit(1)  # the imports still run in the pool's thread: do not wait for them
        except Exception as e:
            report.data["errors"]["build_qwen3"] = repr(e)
        report.put("stages", report.data["stages"])
    for name in ("qwen3-fp32", "qwen3-fp16"):
        if name in artifacts:
            measure(report, name, artifacts[name], args, pairs, batch_sizes)
    lengths = [int(n) for n in args.long_lengths.split(",") if n]
    for name in ("qwen3-fp16", "qwen3-fp32"):  # fp16 first: CUDA's flash path
        if name in artifacts and lengths and report.stage(f"{name} long", 60):
            try:
                report.data["stages"][name]["long"] = long_pairs_engine(
                    artifacts[name], args.provider, lengths
                )
            except Exception as e:
                report.data["errors"][f"{name} long"] = repr(e)
            report.put("stages", report.data["stages"])
    stages = report.data["stages"]
    if "rewards_alone" in stages.get("qwen3-fp32", {}).get("raw", {}) and "rewards_alone" in (
        stages.get("qwen3-fp16", {}).get("raw", {})
    ):
        parity = fp16_parity(
            stages["qwen3-fp32"]["raw"]["rewards_alone"],
            stages["qwen3-fp16"]["raw"]["rewards_alone"],
        )
        report.put("fp16_vs_fp32", parity)
    report.put("complete", not report.data["skipped"] and not report.data["errors"])
    print(json.dumps(summary(report.data), indent=2))
    return 0 if report.data["complete"] else 1


def measure(
    report: Report, name: str, artifact: Path, args: argparse.Namespace,
    pairs: list[tuple[str, str]], batch_sizes: list[int],
) -> None:  # fmt: skip
    result: dict[str, Any] = {}
    report.data["stages"][name] = result
    if report.stage(f"{name} raw engine", 20):
        try:
            result["raw"] = raw_engine(artifact, args.provider, pairs, batch_sizes, rounds=2)
        except Exception as e:
            report.data["errors"][f"{name} raw"] = repr(e)
        report.put("stages", report.data["stages"])
    if report.stage(f"{name} served", 2 * args.seconds + 40):
        try:
            result["served"] = served(
                artifact, args.provider, pairs, args.callers, args.seconds,
                args.out / f"serve-{name}.log", SERVE_FLAGS[args.size],
            )  # fmt: skip
            raw = result.get("raw", {}).get("best_pairs_per_second")
            if raw:
                result["ratios_to_raw_best"] = {
                    "score_batch": round(result["served"]["score_batch_pairs_per_second"] / raw, 3),
                    "score": round(result["served"]["score_pairs_per_second"] / raw, 3),
                }
        except Exception as e:
            report.data["errors"][f"{name} served"] = repr(e)
        report.put("stages", report.data["stages"])


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, printed at the end."""
    out: dict[str, Any] = {"complete": data.get("complete"), "skipped": data["skipped"]}
    out["errors"] = data["errors"]
    for name, stage in data["stages"].items():
        raw, srv = stage.get("raw", {}), stage.get("served", {})
        out[name] = (
            {
                "provider_served": srv.get("model_info", {}).get("provider"),
                "device_served": srv.get("model_info", {}).get("device"),
                "raw_best_pairs_per_second": raw.get("best_pairs_per_second"),
                "raw_best_batch": raw.get("best_batch"),
                "raw_invariance": raw.get("batch_invariance_max_abs_diff"),
                "served_invariance": srv.get("batch_invariance_max_abs_diff"),
                "ratios_to_raw_best": stage.get("ratios_to_raw_best"),
            }
            if isinstance(stage, dict) and ("raw" in stage or "served" in stage)
            else stage
        )
    out["fp16_vs_fp32"] = data.get("fp16_vs_fp32")
    out["elapsed_seconds"] = data.get("elapsed_seconds")
    return out


if __name__ == "__main__":
    sys.exit(main())
