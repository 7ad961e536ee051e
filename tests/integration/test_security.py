"""TLS, mutual TLS, bearer-token auth and the plaintext health-only port, against real servers
with certificates made at test time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rmserve.client import AsyncRewardClient, RewardClientError
from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.certs import CertAuthority
from tests.support.harness import (
    SERVICE,
    Harness,
    eventually,
    make_settings,
    scripted_factory,
    serving,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TOKEN = "s3cret-test-token"
PAIR = ("What is 2+2?", "4")


@pytest.fixture
async def tls_server(tiny_artifact: Path, ca: CertAuthority) -> AsyncIterator[Harness]:
    server = ca.issue("server", "rmserve", server=True)
    settings = make_settings(
        tiny_artifact, tls_cert_file=server.cert, tls_key_file=server.key, health_port=0
    )
    async with serving(settings) as harness:
        yield harness


async def health_on(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


async def plaintext_code(port: int) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        try:
            await stub.Score(reward_pb2.ScoreRequest(prompt="p", response="r"), timeout=5)
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def client(port: int, **options: object) -> AsyncRewardClient:
    return AsyncRewardClient(f"127.0.0.1:{port}", max_attempts=1, timeout=10, **options)


async def refused_reflection(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a reflection stream opened without sending a message. The server refuses
    it on its metadata alone; a request written meanwhile would race that answer, and a client
    write that loses the race fails on the client as INTERNAL, not with the server's status."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=60)
    code: grpc.StatusCode = await call.code()
    return code


async def test_tls_serves_rewards_and_refuses_plaintext(
    tls_server: Harness, ca: CertAuthority, offline_engine: OrtEngine
) -> None:
    async with client(tls_server.server.port, tls_ca_file=ca.pair.cert) as c:
        reward = await c.score_one(*PAIR)
    (offline,) = offline_engine.score_texts([PAIR[0]], [PAIR[1]])
    assert reward == pytest.approx(float(offline), abs=1e-5)
    assert await plaintext_code(tls_server.server.port) == grpc.StatusCode.UNAVAILABLE
    other_ca = CertAuthority(ca.folder, "untrusted CA")  # a client must verify the server
    with pytest.raises(RewardClientError) as info:
        async with client(tls_server.server.port, tls_ca_file=other_ca.pair.cert) as c:
            await c.score_one(*PAIR)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_health_port_carries_health_only(tls_server: Harness) -> None:
    port = tls_server.server.health_port
    assert port not in (0, tls_server.server.port)
    for service in ("", SERVICE):
        assert await health_on(port, service) == SERVING
    assert await plaintext_code(port) == grpc.StatusCode.UNIMPLEMENTED  # no reward RPCs
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await refused_reflection(channel) == grpc.StatusCode.UNIMPLEMENTED  # none either
    assert tls_server.metric("rmserve_requests_total", method="Score", code="OK") == 0


async def test_health_port_answers_not_serving_during_the_drain(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)  # holds accepted work in the engine
    async with serving(make_settings(tiny_artifact, health_port=0), factory) as harness:
        port = harness.server.health_port
        accepted = asyncio.ensure_future(
            harness.stub.Score(reward_pb2.ScoreRequest(prompt="p", response="r"))
        )
        await eventually(lambda: built[0].calls == 1, "the call to reach the engine")
        stopping = asyncio.create_task(harness.server.stop())  # what SIGTERM triggers
        try:
            await eventually(
                lambda: (
                    harness.server.core is not None
                    and harness.server.core.state.value == "draining"
                ),
                "the drain",
            )
            # probes keep getting answers on the health port, now NOT_SERVING
            for service in ("", SERVICE):
                assert await health_on(port, service) == NOT_SERVING
        finally:
            built[0].gate.set()
        assert (await accepted).num_tokens > 0
        await asyncio.wait_for(stopping, timeout=60)


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    tiny_artifact: Path, ca: CertAuthority
) -> None:
    server = ca.issue("server-mtls", "rmserve", server=True)
    good = ca.issue("trainer", "rl-trainer", server=False)
    rogue = CertAuthority(ca.folder, "rogue CA").issue("rogue", "rl-trainer", server=False)
    settings = make_settings(
        tiny_artifact,
        tls_cert_file=server.cert,
        tls_key_file=server.key,
        tls_client_ca_file=ca.pair.cert,
    )
    async with serving(settings) as harness:
        port = harness.server.port
        async with client(
            port, tls_ca_file=ca.pair.cert, tls_cert_file=good.cert, tls_key_file=good.key
        ) as c:
            assert (await c.score(["a", "b"], ["c", "d"])).shape == (2,)
        for options in (
            {"tls_ca_file": ca.pair.cert},  # no client certificate
            {"tls_ca_file": ca.pair.cert, "tls_cert_file": rogue.cert, "tls_key_file": rogue.key},
        ):
            with pytest.raises(RewardClientError) as info:
                async with client(port, **options) as c:
                    await c.score_one(*PAIR)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE, options
        assert harness.metric("rmserve_requests_total", method="Score", code="OK") == 0


async def test_token_auth(tiny_artifact: Path) -> None:
    async with serving(make_settings(tiny_artifact, auth_token=TOKEN)) as harness:
        port = harness.server.port
        async with client(port, token=TOKEN) as c:
            assert (await c.score(["a"], ["b"])).shape == (1,)
            assert (await c.model_info()).max_request_pairs > 0
        for token in (None, "wrong-token", TOKEN + "x", ""):
            options = {} if token is None else {"token": token}
            with pytest.raises(RewardClientError) as info:
                async with client(port, **options) as c:
                    await c.score_one(*PAIR)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED, token
            assert "bearer token" in info.value.details
        assert harness.metric("rmserve_unauthenticated_total") == 4
        assert harness.metric("rmserve_pairs_total") == 1  # refused calls never reached the core

        # health stays open (probes and load balancers send no token); reflection does not
        assert await health_on(port) == SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            assert await refused_reflection(channel) == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", f"Bearer {TOKEN}"),)
            replies = [
                r
                async for r in stub.ServerReflectionInfo(
                    iter([request]), timeout=60, metadata=metadata
                )
            ]
            names = [s.name for s in replies[0].list_services_response.service]
            assert SERVICE in names


async def test_security_settings_are_checked(tiny_artifact: Path, ca: CertAuthority) -> None:
    with pytest.raises(ValueError, match="go together"):
        make_settings(tiny_artifact, tls_cert_file=ca.pair.cert)
    with pytest.raises(ValueError, match="mutual TLS"):
        make_settings(tiny_artifact, tls_client_ca_file=ca.pair.cert)
    with pytest.raises(ValueError, match="HTTP front"):
        make_settings(tiny_artifact, auth_token=TOKEN, http_port=0)
    with pytest.raises(ValueError, match="empty"):
        make_settings(tiny_artifact, auth_token=" ")
