"""The memory bound's activation term holds on a real decoder: a `rmserve serve` process scoring
the largest batch it can form (a Prefer of two max-length responses, on its one engine worker)
grows its peak RSS by no more than the formula's activations, and by a good part of them (the
term is not vacuous); its whole peak stays within ``required_memory_bytes``.

The decoder is a random Qwen3 (tests/support/qwen3_rm.py) imported with ``rmserve import-hf``
at max_length 2048; its manifest records no shape, so the server's estimate is what is checked.
The peak is the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs before the
batch), never a sampled RSS that could miss it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rmserve.engine.session import load_artifact
from rmserve.serving.activations import engine_activation_bytes, model_shape
from rmserve.serving.memory_budget import (
    default_inflight_bytes,
    folder_bytes,
    required_memory_bytes,
)
from rmserve.testing import ServerProcess, start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.qwen3_rm import write_qwen3_rm

MAX_LENGTH = 2048
MAX_BATCH_TOKENS = 512
SHAPE = {
    "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 4096,
}  # fmt: skip
CALL_BOUND_S = 300.0  # "must not hang"; never a performance target


def status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qwen3-activations")
    write_qwen3_rm(folder / "hf", **SHAPE)
    artifact = folder / "artifact"
    done = subprocess.run(
        [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(folder / "hf"),
         "--out", str(artifact), "--max-length", str(MAX_LENGTH)],
        capture_output=True, text=True, check=False, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return artifact


@pytest.fixture
def server(decoder: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(
        decoder, tmp_path / "server.log",
        "--engine-workers", "1", "--warmup-runs", "0",
        "--max-batch-tokens", str(MAX_BATCH_TOKENS),
    )  # fmt: skip
    try:
        process.wait_serving()
        yield process
    finally:
        process.terminate()


def test_a_max_length_prefer_stays_within_the_activation_term(
    server: ServerProcess, decoder: Path
) -> None:
    artifact = load_artifact(decoder)
    model_bytes = folder_bytes(decoder)
    activations = engine_activation_bytes(
        model_shape(artifact.manifest, model_bytes), artifact.manifest.dtype, MAX_LENGTH,
        MAX_BATCH_TOKENS, workers=1, long_batch_workers=0,
    )  # fmt: skip
    long = " ".join(["paris"] * (MAX_LENGTH + 64))  # cut to max_length: the longest pair
    with grpc.insecure_channel(server.target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        stub.Score(reward_pb2.ScoreRequest(prompt="hi", response="hello"), timeout=CALL_BOUND_S)
        one = stub.Score(reward_pb2.ScoreRequest(prompt="say it", response=long), timeout=300)
        assert one.num_tokens == MAX_LENGTH and one.truncated  # the longest pair there is
        pid = server.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = status_bytes(pid, "VmRSS:")
        reply = stub.Prefer(
            reward_pb2.PreferRequest(prompt="say it", response_a=long, response_b=long + " ."),
            timeout=CALL_BOUND_S,
        )
        peak = status_bytes(pid, "VmHWM:")
    assert reply.result.truncated_a and reply.result.truncated_b  # both at max_length
    grew = peak - before
    assert grew <= activations, f"grew {grew >> 20} MiB, the term is {activations >> 20} MiB"
    assert grew >= activations // 8, f"grew {grew >> 20} MiB of {activations >> 20} MiB"
    bound = required_memory_bytes(
        model_bytes, default_inflight_bytes(64 << 20), 16384, MAX_LENGTH, activations
    )
    assert peak <= bound, f"peak {peak >> 20} MiB over the bound {bound >> 20} MiB"
