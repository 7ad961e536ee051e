"""The OpenRLHF-compatible HTTP front (``POST /get_reward``) on the same core as gRPC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

HH_PROMPT = "\n\nHuman: What is the capital of France?\n\nAssistant:"


@pytest.fixture(scope="module")
async def front(tiny_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, http_port=0, max_request_pairs=64)
    async with serving(settings) as harness:
        yield harness


async def post(harness: Harness, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    url = f"http://127.0.0.1:{harness.server.http_port}/get_reward"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with session.post(url, **kwargs) as response:
            return response.status, await response.json(), dict(response.headers)


def metric(harness: Harness, code: str) -> float:
    return harness.metric("rmserve_requests_total", method="http_get_reward", code=code)


async def test_rewards_equal_grpc_score_batch(front: Harness) -> None:
    prompts = [HH_PROMPT, HH_PROMPT, "Say hi", "", "Tell me a joke."]
    responses = [" Paris.", " It is Lyon, I think.", "Hi!", "empty prompt", ""]
    before = metric(front, "OK")
    status, body, _ = await post(
        front,
        {
            "query": [p + r for p, r in zip(prompts, responses, strict=True)],
            "prompts": prompts,
            "labels": ["ignored"] * 5,
        },
    )
    assert status == 200, body
    reply = await front.stub.ScoreBatch(
        reward_pb2.ScoreBatchRequest(
            pairs=[
                reward_pb2.Pair(prompt=p, response=r)
                for p, r in zip(prompts, responses, strict=True)
            ]
        )
    )
    expected = [r.reward for r in reply.results]
    assert body["rewards"] == pytest.approx(expected, abs=1e-5)
    assert body["scores"] == body["rewards"]
    assert len(set(body["rewards"])) == 5  # in order, not a constant
    assert body["model_version"] == reply.model_version
    assert metric(front, "OK") == before + 1


async def test_normalize_uses_the_manifest_stats(front: Harness) -> None:
    query = {"query": [HH_PROMPT + " Paris."], "prompts": [HH_PROMPT]}
    _, raw, _ = await post(front, query)
    status, normalized, _ = await post(front, {**query, "normalize": True})
    norm = front.server.core.artifact.manifest.normalization  # type: ignore[union-attr]
    assert status == 200
    assert normalized["rewards"][0] == pytest.approx(
        (raw["rewards"][0] - norm.mean) / norm.std, abs=1e-5
    )


async def test_query_not_starting_with_its_prompt_is_400_naming_the_index(
    front: Harness,
) -> None:
    before = metric(front, "INVALID_ARGUMENT")
    status, body, _ = await post(
        front, {"query": ["a b", "c d", "x y"], "prompts": ["a", "c", "z"]}
    )
    assert status == 400
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert "query[2]" in body["error"]["message"] and "prompts[2]" in body["error"]["message"]
    assert metric(front, "INVALID_ARGUMENT") == before + 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        ({"query": ["a"]}, "prompts"),
        ({"query": ["a", "b"], "prompts": ["a"]}, "2 entries"),
        ({"query": ["a", 3], "prompts": ["a", ""]}, "query[1]"),
        ({"query": ["q"] * 65, "prompts": ["q"] * 65}, "max_request_pairs=64"),
        (b"[" * 100_000, "nested too deeply"),  # json recurses per level: not a 500
        (b'{"a":' * 100_000, "nested too deeply"),
    ],
)
async def test_malformed_requests_are_400(
    front: Harness, caplog: pytest.LogCaptureFixture, body: Any, words: str
) -> None:
    before = metric(front, "INVALID_ARGUMENT")
    status, reply, _ = await post(front, body)
    assert status == 400 and words in reply["error"]["message"]
    assert metric(front, "INVALID_ARGUMENT") == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(
    front: Harness,
) -> None:
    """Only the headers are sent: an answer proves the server did not wait to read the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.server.http_port)
    try:
        writer.write(
            b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (1 << 30)
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        assert status_line.split()[1] == b"413", status_line
    finally:
        writer.close()


async def test_a_body_over_max_message_bytes_is_413_naming_the_limit(tiny_artifact: Path) -> None:
    limit = 1024
    settings = make_settings(tiny_artifact, http_port=0, max_message_bytes=limit)
    async with serving(settings) as harness:
        url = f"http://127.0.0.1:{harness.server.http_port}/get_reward"
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, data=b" " * (limit + 1)) as response:
                assert response.status == 413
                assert f"max_message_bytes={limit}" in await response.text()
            async with session.post(url, data=b" " * (limit - 2) + b"{}") as response:
                assert response.status == 400  # read whole and parsed: no "query"
                assert "query" in (await response.json())["error"]["message"]
        assert metric(harness, "INVALID_ARGUMENT") == 2


async def test_empty_query_list_is_empty_rewards(front: Harness) -> None:
    status, body, _ = await post(front, {"query": [], "prompts": []})
    assert (status, body["rewards"], body["scores"]) == (200, [], [])


async def test_overload_is_429_with_retry_after(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, http_port=0, max_queue_pairs=4, max_request_pairs=4)
    async with serving(settings, factory) as harness:
        engine = built[0]
        try:
            held = [asyncio.ensure_future(post(harness, {"query": ["q a"], "prompts": ["q"]}))]
            await eventually(lambda: engine.calls == 1, "the first batch in the engine")
            body = {"query": [f"q{i} a" for i in range(4)], "prompts": [f"q{i}" for i in range(4)]}
            held.append(asyncio.ensure_future(post(harness, body)))
            await eventually(lambda: harness.metric("rmserve_queue_pairs") == 4, "a full queue")
            status, reply, headers = await post(harness, {"query": ["x y"], "prompts": ["x"]})
            assert status == 429 and reply["error"]["code"] == "RESOURCE_EXHAUSTED"
            assert int(headers["Retry-After"]) >= 1
            assert metric(harness, "RESOURCE_EXHAUSTED") == 1
            engine.gate.set()
            assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200]
        finally:
            engine.gate.set()


async def test_loading_server_is_503_then_serves(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, http_port=0, warmup_runs=1)
    async with serving(settings, factory, load=False) as harness:
        health = f"http://127.0.0.1:{harness.server.http_port}/health"
        async with aiohttp.ClientSession() as session:
            async with session.get(health) as response:
                assert response.status == 503
            status, reply, headers = await post(harness, {"query": ["q a"], "prompts": ["q"]})
            assert status == 503 and reply["error"]["code"] == "UNAVAILABLE"
            assert "Retry-After" in headers
            await eventually(lambda: bool(built), "the engine to be built")
            built[0].gate.set()
            await eventually(lambda: harness.server.core is not None, "the core")
            core = harness.server.core
            assert core is not None
            await eventually(lambda: core.state.value == "serving", "SERVING")
            async with session.get(health) as response:
                assert response.status == 200
            status, reply, _ = await post(harness, {"query": ["q a"], "prompts": ["q"]})
            assert status == 200 and len(reply["rewards"]) == 1


async def test_http_front_is_off_by_default(front: Harness, tiny_artifact: Path) -> None:
    async with serving(make_settings(tiny_artifact)) as harness:
        assert harness.server.http_port == 0
    assert front.server.http_port > 0
