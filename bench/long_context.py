"""Long rollouts on a decoder RM: the 2-layer Qwen3 reward model at the Qwen3-0.6B attention
shape (hidden 1024, 16 query / 8 KV heads, head_dim 128, 40,960 positions, random weights),
imported twice from the same folder:

- ``fused`` (today's default): ``rmserve import-hf`` with default flags, attention as
  onnxruntime's ``GroupQueryAttention``;
- ``unfused`` (the baseline, what every decoder artifact was before): ``--attention unfused``,
  the traced MatMul + Softmax graph, whose [heads, L, L] scores grow with the square of L.

Each import's wall time and peak RSS, then per length one pair of exactly L tokens scored alone
by a fresh process through ``OrtEngine`` on the CPU: RSS after load, peak RSS, seconds and
tokens/s. The unfused graph is only run where its scores fit (``--unfused-lengths``). Then a
real ``rmserve serve`` of the fused artifact: startup RSS, one 16,384-token ``Score`` (RSS over
idle, reward against HF's SDPA fp32 forward) and one 32,768-token ``Score``.

    python bench/long_context.py --out bench/results/long-context-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_record import cpu_model
from tests.support.qwen3_rm import QWEN3_0_6B, WORDS, write_qwen3_rm

SHAPE = {**QWEN3_0_6B, "num_hidden_layers": 2, "vocab_size": 1000}
LENGTHS = (512, 2048, 4096, 8192, 16384, 32768)
UNFUSED_LENGTHS = (512, 2048, 4096)


def run_measured(argv: list[str]) -> tuple[str, float, float]:
    """Run a child; its stdout, wall seconds and peak RSS in GiB (wait4's ru_maxrss)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{argv[:5]} failed ({child.returncode}): {err.read()[-3000:]}")
        return out.read(), wall, usage.ru_maxrss / 2**20


def import_model(hf_dir: Path, out: Path, *flags: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(hf_dir)]
    stdout, wall, peak = run_measured([*argv, "--out", str(out), *flags])
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "flags": list(flags),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(peak, 3),
        "result": json.loads(stdout.splitlines()[-1]),
        "max_length": manifest["preprocessing"]["max_length"],
        "optimization": manifest["optimization"],
        "metrics": manifest["metrics"],
    }


def rss_gib(pid: int | str = "self", field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def probe(artifact: Path, length: int) -> dict[str, Any]:
    """In this (fresh) process: load, then score one pair of exactly ``length`` tokens."""
    from rmserve.engine.session import OrtEngine, load_artifact
    from rmserve.text.prepared import PreparedPair, int64

    engine = OrtEngine(load_artifact(artifact), provider="cpu")
    loaded = rss_gib()
    ids = int64([(7 + i) % 900 + 50 for i in range(length)])
    pair = PreparedPair(ids, int64([0] * length), False, False)
    runs = 1 if length >= 8192 else 2
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.score([pair])
        seconds.append(time.perf_counter() - started)
    return {
        "tokens": length,
        "rss_after_load_gib": round(loaded, 3),
        "peak_rss_gib": round(rss_gib(field="VmHWM"), 3),
        "seconds": round(seconds[-1], 2),
        "tokens_per_s": round(length / seconds[-1], 1),
        "runs": runs,
    }


def probe_child(artifact: Path, length: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--probe", str(artifact), "--length", str(length)]
    stdout, _, _ = run_measured(argv)
    result: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return result


def long_text(tokens: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def hf_reward(hf_dir: Path, artifact: Path, prompt: str, response: str) -> tuple[float, int]:
    """HF's own forward (SDPA, fp32) on the ids rmserve prepares for the pair."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rmserve.engine.session import load_artifact

    pair = load_artifact(artifact).preprocessor.prepare(prompt, response)
    model = AutoModelForSequenceClassification.from_pretrained(
        hf_dir, attn_implementation="sdpa", dtype=torch.float32
    )
    model.eval()
    with torch.no_grad():
        ids = torch.from_numpy(pair.input_ids)[None]
        return float(model(input_ids=ids).logits[0, 0]), pair.num_tokens


def served(hf_dir: Path, artifact: Path, work: Path) -> dict[str, Any]:
    """A real server with the default settings: startup RSS, then one ~16k and one ~32k Score."""
    import grpc

    from rmserve.testing import start_server
    from rmserve.v1 import reward_pb2, reward_pb2_grpc

    started = time.perf_counter()
    # start_server pins one intra-op thread for tests; 0 is the server's default (every core).
    server = start_server(artifact, work / "serve.log", "--intra-op-threads", "0")
    figures: dict[str, Any] = {}
    try:
        server.wait_serving(timeout=3600)
        pid = server.process.pid
        figures["ready_s"] = round(time.perf_counter() - started, 1)
        figures["startup_peak_rss_gib"] = round(rss_gib(pid, "VmHWM"), 3)
        idle = rss_gib(pid)
        figures["idle_rss_gib"] = round(idle, 3)
        with grpc.insecure_channel(server.target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            for target in (16384, 32768):
                prompt, response = "Check the reasoning below.", long_text(target - 40)
                t0 = time.perf_counter()
                reply = stub.Score(
                    reward_pb2.ScoreRequest(prompt=prompt, response=response), timeout=3600
                )
                peak = rss_gib(pid, "VmHWM")
                row: dict[str, Any] = {
                    "reward": reply.reward,
                    "truncated": reply.truncated,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "peak_rss_gib": round(peak, 3),
                    "peak_over_idle_gib": round(peak - idle, 3),
                }
                if target == 16384:
                    reference, tokens = hf_reward(hf_dir, artifact, prompt, response)
                    row.update(
                        tokens=tokens,
                        hf_sdpa_fp32=reference,
                        relative_diff=abs(reply.reward - reference) / max(abs(reference), 1e-12),
                    )
                figures[f"score_{target}"] = row
                print(json.dumps({target: row}), flush=True)
    finally:
        figures["exit_code"] = server.terminate()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--unfused-lengths", default=",".join(map(str, UNFUSED_LENGTHS)))
    parser.add_argument("--no-serve", action="store_true", help="skip the served part")
    parser.add_argument("--note", default="")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.length)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="long-context-"))
    work.mkdir(parents=True, exist_ok=True)
    lengths = [int(n) for n in args.lengths.split(",") if n]
    unfused_lengths = [int(n) for n in args.unfused_lengths.split(",") if n]
    load_before = os.getloadavg()
    started = time.time()
    hf_dir = work / "hf"
    if not (hf_dir / "config.json").exists():
        write_qwen3_rm(hf_dir, **SHAPE)
    figures: dict[str, Any] = {"model": SHAPE}
    fused, unfused = work / "fused", work / "unfused"
    figures["import_fused"] = import_model(hf_dir, fused)
    print(json.dumps(figures["import_fused"]), flush=True)
    figures["import_unfused"] = import_model(
        hf_dir, unfused, "--attention", "unfused", "--max-length", str(max(unfused_lengths))
    )
    print(json.dumps(figures["import_unfused"]), flush=True)
    rows = []
    for length in lengths:
        row: dict[str, Any] = {"tokens": length, "fused": probe_child(fused, length)}
        if length in unfused_lengths:
            row["unfused"] = probe_child(unfused, length)
            row["tokens_per_s_ratio"] = round(
                row["fused"]["tokens_per_s"] / row["unfused"]["tokens_per_s"], 2
            )
            row["peak_rss_ratio"] = round(
                row["unfused"]["peak_rss_gib"] / row["fused"]["peak_rss_gib"], 2
            )
        print(json.dumps(row), flush=True)
        rows.append(row)
    figures["scoring"] = rows
    if not args.no_serve:
        figures["served"] = served(hf_dir, fused, work)
        print(json.dumps(figures["served"]), flush=True)
    summary = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": round(time.time() - started, 1),
        "note": args.note,
        **figures,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
