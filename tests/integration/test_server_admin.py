"""Health, reflection, /metrics and the one-shot client CLI against a real server."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from rmserve import cli
from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import SERVICE, Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

METRIC_NAMES = [
    "rmserve_requests_total",
    "rmserve_request_duration_seconds_bucket",
    "rmserve_queue_duration_seconds_bucket",
    "rmserve_tokenize_duration_seconds_bucket",
    "rmserve_inference_duration_seconds_bucket",
    "rmserve_batch_size_bucket",
    "rmserve_batch_tokens_bucket",
    "rmserve_padding_ratio_bucket",
    "rmserve_queue_pairs",
    "rmserve_inflight_requests",
    "rmserve_pairs_total",
    "rmserve_tokens_total",
    "rmserve_truncated_total",
    "rmserve_expired_total",
    "rmserve_engine_errors_total",
    "rmserve_reward_bucket",
    "rmserve_model_info",
]


async def test_health_serving_for_server_and_service(shared: Harness) -> None:
    for service in ("", SERVICE):
        assert await shared.health_status(service) == health_pb2.HealthCheckResponse.SERVING


def list_services(port: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


async def test_reflection_lists_the_service(shared: Harness) -> None:
    services = await asyncio.to_thread(list_services, shared.server.port)
    assert SERVICE in services and "grpc.health.v1.Health" in services


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_endpoint_exposes_sensible_values(
    shared: Harness, offline_engine: OrtEngine
) -> None:
    pairs = [reward_pb2.Pair(prompt=f"q{i}", response="a " * i) for i in range(40)]
    await shared.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs))
    samples = await asyncio.to_thread(scrape, shared.server.metrics_port)
    names = {key.split("{")[0] for key in samples}
    missing = [name for name in METRIC_NAMES if name not in names]
    assert not missing, f"missing metrics: {missing}"
    assert samples['rmserve_requests_total{code="OK",method="ScoreBatch"}'] >= 1
    assert samples["rmserve_pairs_total"] >= 40
    assert samples["rmserve_tokens_total"] >= samples["rmserve_pairs_total"]
    assert samples["rmserve_queue_pairs"] == 0
    assert samples["rmserve_inflight_requests"] == 0
    assert samples["rmserve_reward_count"] == samples["rmserve_pairs_total"]
    assert samples["rmserve_batch_size_sum"] == samples["rmserve_pairs_total"]
    assert samples["rmserve_padding_ratio_sum"] / samples["rmserve_padding_ratio_count"] >= 1.0
    manifest = offline_engine.artifact.manifest
    info = (
        f'rmserve_model_info{{name="{manifest.name}",provider="CPUExecutionProvider",'
        f'version="{manifest.version}"}}'
    )
    assert samples[info] == 1.0


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code = await asyncio.to_thread(cli.main, argv)
    assert code == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return result


async def test_one_shot_client_cli(
    shared: Harness, offline_engine: OrtEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    out = await run_cli(
        ["score", "--target", target, "--prompt", "2+2?", "--response", "4"], capsys
    )
    (offline,) = offline_engine.score_texts(["2+2?"], ["4"])
    assert out["reward"] == pytest.approx(float(offline), abs=1e-5)
    assert out["truncated"] is False and isinstance(out["num_tokens"], int)
    argv = ["prefer", "--target", target, "--prompt", "2+2?", "--response-a", "4"]
    out = await run_cli([*argv, "--response-b", "five"], capsys)
    assert set(out) >= {"probability_a", "reward_a", "reward_b"}
    assert 0.0 <= float(out["probability_a"]) <= 1.0  # type: ignore[arg-type]


async def test_cli_reports_rpc_errors(shared: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    # just over the shared server's 1 MiB max_message_bytes (within gRPC's transport envelope)
    argv = ["score", "--target", f"127.0.0.1:{shared.server.port}", "--prompt", "x" * (1 << 20)]
    code = await asyncio.to_thread(cli.main, [*argv, "--response", ""])
    assert code == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "max_message_bytes=1048576" in err
