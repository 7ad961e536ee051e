"""Request text never leaks: not to the metrics port, and not to the log unless the
log_request_content debug setting is on."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPT = "zqxprompt7731"
RESPONSE = "vkwresponse4409"
MARKERS = (PROMPT, RESPONSE)


async def send_everything(h: Harness) -> None:
    """Every RPC, OK and failing, carrying the marker strings."""
    pair = reward_pb2.Pair(prompt=PROMPT, response=RESPONSE)
    await h.stub.Score(reward_pb2.ScoreRequest(prompt=PROMPT, response=RESPONSE))
    await h.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=[pair] * 3))
    item = reward_pb2.PreferItem(prompt=PROMPT, response_a=RESPONSE, response_b=RESPONSE + "b")
    await h.stub.Prefer(
        reward_pb2.PreferRequest(prompt=PROMPT, response_a=RESPONSE, response_b="x")
    )
    await h.stub.PreferBatch(reward_pb2.PreferBatchRequest(items=[item] * 2))
    failing: list[Any] = [
        h.stub.ScoreBatch(  # missing field
            reward_pb2.ScoreBatchRequest(pairs=[pair, reward_pb2.Pair(prompt=PROMPT)])
        ),
        h.stub.Score(  # over max_message_bytes
            reward_pb2.ScoreRequest(prompt=PROMPT * 200_000, response=RESPONSE)
        ),
        h.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=[pair] * 5000)),  # too many pairs
    ]
    for call in failing:
        with pytest.raises(grpc.aio.AioRpcError):
            await call


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_metrics_port_leaks_no_request_content(tiny_artifact: Path) -> None:
    settings = make_settings(tiny_artifact, max_request_pairs=4096, max_message_bytes=1 << 20)
    async with serving(settings) as h:
        await send_everything(h)
        text = await asyncio.to_thread(scrape, h.server.metrics_port)
    assert 'rmserve_requests_total{code="OK",method="Score"} 1.0' in text  # it did count them
    assert "INVALID_ARGUMENT" in text
    for marker in MARKERS:
        assert marker not in text
    assert "zqx" not in text and "vkw" not in text  # no fragment either


async def bug_in_core(h: Harness) -> None:
    """An unexpected exception whose message quotes the request (the servicer's bug path)."""
    core = h.server.core
    assert core is not None
    original = core.score

    async def broken(pairs: Any, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"cannot handle {pairs[0]!r}")

    core.score = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await h.stub.Score(reward_pb2.ScoreRequest(prompt=PROMPT, response=RESPONSE))
        assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        core.score = original  # type: ignore[method-assign]


async def logged_text(tiny_artifact: Path, caplog: pytest.LogCaptureFixture, debug: bool) -> str:
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    built, factory = scripted_factory()
    settings = make_settings(tiny_artifact, max_message_bytes=1 << 20, log_request_content=debug)
    async with serving(settings, factory) as h:
        await send_everything(h)
        built[0].fail_calls = {built[0].calls}  # the next engine batch raises
        with pytest.raises(grpc.aio.AioRpcError):
            await h.stub.Score(reward_pb2.ScoreRequest(prompt=PROMPT, response=RESPONSE))
        await eventually(lambda: h.metric("rmserve_engine_errors_total") == 1, "engine error")
        await bug_in_core(h)
    return caplog.text


async def test_logs_carry_no_request_content(
    tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = await logged_text(tiny_artifact, caplog, debug=False)
    assert "failed with ValueError (message withheld" in text  # the bug path did log
    assert "scripted failure" in text  # and so did the engine failure
    for marker in MARKERS:
        assert marker not in text


async def test_debug_setting_logs_request_content(
    tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = await logged_text(tiny_artifact, caplog, debug=True)
    for marker in MARKERS:
        assert marker in text
