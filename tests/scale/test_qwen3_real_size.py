"""A real size, end to end (not in the default run: ``pytest -m large``; ~20 minutes
on 2 cores, up to ~10 GiB of RAM).

A random-weight Qwen3 reward model at the Qwen3-0.6B shape (> 2 GiB of fp32 weights) with a
ChatML-style template goes through ``rmserve import-hf`` (weights beyond the protobuf limit, so
external data without being asked), ``rmserve serve`` and ScoreBatch; served rewards equal the
HF model's own forward (≤ 1e-3), and one 8k-token pair is served within 1e-3 relative of HF's
SDPA fp32 forward (the import itself checked a pair near 8,192 tokens). Prints the figures
docs/benchmarks/demo-and-real-size.md#a-real-size-decoder-on-the-cpu quotes as one JSON line."""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from rmserve.engine.session import load_artifact
from rmserve.testing import start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.qwen3_rm import QWEN3_0_6B, write_qwen3_rm

pytestmark = [pytest.mark.large, pytest.mark.timeout(5400)]

PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("say hello", "hello ! how can i help you today ?"),
    ("", ""),
    ("write a haiku about the sea " * 6, "waves fold into foam"),
]
LONG_TOKENS = 8192
LONG_PAIR = ("check the reasoning below .", " ".join(["one two three four five six"] * 1360))
THROUGHPUT_PAIRS = [
    (f"explain how {' '.join(['one two three'] * (1 + i % 5))} ?", "waves fold into foam . " * 4)
    for i in range(32)
]


def hf_rewards(model_dir: Path, artifact: Path) -> np.ndarray:
    """HF's own forward (SDPA, fp32) on each pair alone: PAIRS, then LONG_PAIR."""
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="sdpa", dtype=torch.float32
    )
    model.eval()
    texts = [*PAIRS, LONG_PAIR]
    prepared = load_artifact(artifact).preprocessor.prepare_many(
        [p for p, _ in texts], [r for _, r in texts]
    )
    assert LONG_TOKENS - 200 < prepared[-1].num_tokens <= LONG_TOKENS
    with torch.no_grad():
        out = [
            model(input_ids=torch.from_numpy(p.input_ids)[None]).logits[0, 0].item()
            for p in prepared
        ]
    return np.array(out, dtype=np.float32)


def rss_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def test_qwen3_0_6b_shape_import_serve_score(tmp_path: Path) -> None:
    model_dir, out = tmp_path / "qwen3-rm", tmp_path / "artifact"
    write_qwen3_rm(model_dir, **QWEN3_0_6B)
    gc.collect()

    started = time.perf_counter()
    imported = subprocess.run(
        [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(model_dir),
         "--out", str(out), "--max-length", str(LONG_TOKENS)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    export_s = time.perf_counter() - started
    export_peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert imported.returncode == 0, imported.stderr[-4000:]

    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE, MANIFEST_FILE]
    )
    manifest = read_manifest(out)
    weights = manifest.files[WEIGHTS_FILE].bytes
    assert weights is not None and weights > 2 * 1024**3
    assert manifest.parity is not None and manifest.parity.status == "checked"
    assert manifest.optimization == "ort-gqa"
    assert manifest.metrics["export_long_parity_tokens"] >= LONG_TOKENS - 128
    expected = hf_rewards(model_dir, out)
    gc.collect()

    started = time.perf_counter()
    server = start_server(out, tmp_path / "serve.log", "--intra-op-threads", "2")
    try:
        server.wait_serving(timeout=1800)
        serving_s = time.perf_counter() - started
        idle = rss_kib(server.process.pid)
        with grpc.insecure_channel(server.target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            started = time.perf_counter()
            long = stub.Score(
                reward_pb2.ScoreRequest(prompt=LONG_PAIR[0], response=LONG_PAIR[1]), timeout=3600
            )
            long_s = time.perf_counter() - started
            after_long = rss_kib(server.process.pid)
            pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
            reply = stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=600)
            batch = [reward_pb2.Pair(prompt=p, response=r) for p, r in THROUGHPUT_PAIRS]
            request = reward_pb2.ScoreBatchRequest(pairs=batch)
            stub.ScoreBatch(request, timeout=600)
            started = time.perf_counter()
            for _ in range(3):
                stub.ScoreBatch(request, timeout=600)
            pairs_per_s = 3 * len(batch) / (time.perf_counter() - started)
            memory = rss_kib(server.process.pid)
    finally:
        assert server.terminate() == 0
    served = np.array([r.reward for r in reply.results], dtype=np.float32)
    assert np.abs(served - expected[:-1]).max() <= 1e-3, (served, expected)
    long_relative = abs(long.reward - float(expected[-1])) / max(abs(float(expected[-1])), 1e-6)
    assert not long.truncated and long_relative <= 1e-3, (long.reward, expected[-1])
    figures = {
        "parameters": manifest.parameters,
        "export_seconds": round(export_s, 1),
        "export_peak_rss_gib": round(export_peak_kib / 1024**2, 2),
        "artifact_bytes": sum(e.bytes or 0 for e in manifest.files.values()),
        "seconds_to_serving": round(serving_s, 1),
        "server_rss_gib": round(memory["VmRSS"] / 1024**2, 2),
        "server_peak_rss_gib": round(memory["VmHWM"] / 1024**2, 2),
        "pairs_per_second_cpu": round(pairs_per_s, 2),
        "throughput_batch": len(batch),
        "served_vs_hf_max_abs_diff": float(np.abs(served - expected[:-1]).max()),
        "idle_rss_gib": round(idle["VmRSS"] / 1024**2, 2),
        "startup_peak_rss_gib": round(idle["VmHWM"] / 1024**2, 2),
        "long_pair_tokens": long.num_tokens,
        "long_pair_seconds": round(long_s, 1),
        "long_pair_peak_rss_gib": round(after_long["VmHWM"] / 1024**2, 2),
        "long_pair_vs_hf_relative_diff": long_relative,
        "export_long_parity_max_abs_diff": manifest.metrics["export_long_parity_max_abs_diff"],
        "export_parity": manifest.parity.model_dump(),
    }
    print("QWEN3_0_6B_FIGURES " + json.dumps(figures))
