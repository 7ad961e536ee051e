"""Hostile tokenising against a real server on 127.0.0.1 with a chat-template artifact (a tiny
Llama-3-style decoder imported with ``rmserve import-hf``): a group's big prompt is tokenised
once, the event loop answers while a big request is tokenised, and a request whose caller left
stops tokenising between chunks. Costs are counted in characters tokenised, never timed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from tokenizers import Encoding

from rmserve.serving import tokenizing
from rmserve.text import preprocess
from rmserve.text.preprocess import Preprocessor
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, make_settings, serving
from tests.support.hf_families import FAMILIES, build

pytestmark = pytest.mark.asyncio(loop_scope="session")

Cli = Callable[[list[str]], tuple[int, list[str]]]
PROMPT = "Summarise this: " + "word " * 51_000  # about 255 KB
GROUP = [f"answer {i}: " + "fine " * (i % 9) for i in range(256)]
BOUND_S = 30.0  # "answers while it runs": a generous bound, never a performance assertion


class Counting:
    """The server's tokenizer, counting what it encodes; calls off the event loop's thread
    wait at ``gate`` (open unless a test closes it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()

    def _pass(self, texts: list[str]) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.held.set()
            assert self.gate.wait(120), "the test never opened the gate"
        self.texts += texts

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Encoding:
        self._pass([text])
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch_fast(self, texts: list[str], *args: Any, **kwargs: Any) -> list[Encoding]:
        self._pass(list(texts))
        return self.inner.encode_batch_fast(texts, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> list[Encoding]:
        self._pass(list(texts))
        return self.inner.encode_batch(texts, *args, **kwargs)

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
async def templated(
    tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> AsyncIterator[Harness]:
    folder = tmp_path_factory.mktemp("llama")
    hf_dir = build(FAMILIES["llama"], folder / "hf")
    artifact = folder / "artifact"
    code, lines = rmserve_cli(
        ["import-hf", "--model", str(hf_dir), "--out", str(artifact), "--max-length", "64"]
    )
    assert code == 0 and json.loads(lines[-1])["join"] == "template"
    settings = make_settings(Path(artifact), max_request_pairs=512, http_port=0)
    async with serving(settings) as harness:
        yield harness


def preprocessor(h: Harness) -> Preprocessor:
    assert h.server.core is not None
    return h.server.core.artifact.preprocessor


@contextmanager
def counting(h: Harness) -> Iterator[Counting]:
    pre = preprocessor(h)
    tokenizer = Counting(pre.tokenizer)
    pre.tokenizer = tokenizer  # type: ignore[assignment]
    try:
        yield tokenizer
    finally:
        tokenizer.gate.set()
        pre.tokenizer = tokenizer.inner


async def test_group_of_256_costs_at_most_two_scores_of_its_prompt(templated: Harness) -> None:
    assert preprocessor(templated).splits_template
    with counting(templated) as score:
        single = await templated.stub.Score(
            reward_pb2.ScoreRequest(prompt=PROMPT, response=GROUP[0]), timeout=120
        )
    with counting(templated) as group:
        reply = await templated.stub.ScoreGroup(
            reward_pb2.ScoreGroupRequest(prompt=PROMPT, responses=GROUP), timeout=120
        )
    assert single.truncated and len(reply.results) == 256
    assert group.chars <= 2 * score.chars
    assert sum(PROMPT[-1000:] in t for t in group.texts) == 1  # the prompt: once
    for i in (0, 1, 100, 255):
        alone = await templated.stub.Score(
            reward_pb2.ScoreRequest(prompt=PROMPT, response=GROUP[i]), timeout=120
        )
        got = reply.results[i]
        assert (got.num_tokens, got.truncated) == (alone.num_tokens, alone.truncated)
        assert got.reward == pytest.approx(alone.reward, abs=1e-6)


async def test_event_loop_answers_while_a_big_group_is_tokenised(templated: Harness) -> None:
    with counting(templated) as tokenizer:
        tokenizer.gate.clear()
        group = asyncio.ensure_future(
            templated.stub.ScoreGroup(
                reward_pb2.ScoreGroupRequest(prompt=PROMPT, responses=GROUP), timeout=120
            )
        )
        assert await asyncio.to_thread(tokenizer.held.wait, BOUND_S)  # held mid-tokenising
        assert await asyncio.wait_for(templated.health_status(), BOUND_S) == 1  # SERVING
        small = await asyncio.wait_for(
            templated.stub.Score(reward_pb2.ScoreRequest(prompt="Hi", response="Hello.")),
            BOUND_S,
        )
        assert small.num_tokens > 0 and not group.done()
        tokenizer.gate.set()
        assert len((await group).results) == 256


async def test_cancelled_big_request_stops_tokenising_between_chunks(
    templated: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = threading.Event()
    inner = tokenizing.tokenize_chunks

    def watched(*args: Any) -> Any:
        try:
            return inner(*args)
        finally:
            finished.set()

    monkeypatch.setattr(tokenizing, "tokenize_chunks", watched)
    monkeypatch.setattr(preprocess, "TOKENIZE_CHUNK_CHARS", 1)  # a chunk per row
    before = templated.metric("rmserve_cancelled_total")
    pairs = [reward_pb2.Pair(prompt=f"{i} {PROMPT}", response="ok") for i in range(16)]
    with counting(templated) as tokenizer:
        tokenizer.gate.clear()
        call = templated.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=120)
        assert await asyncio.to_thread(tokenizer.held.wait, BOUND_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(_cancelled_count_above(templated, before), BOUND_S)
        tokenizer.gate.set()
        assert await asyncio.to_thread(finished.wait, BOUND_S)
        rows = {t.split(" ", 1)[0] for t in tokenizer.texts if PROMPT[-100:] in t}
        assert len(rows) == 1  # the row under way when the caller left, then no more


async def _cancelled_count_above(h: Harness, before: float) -> None:
    while h.metric("rmserve_cancelled_total") <= before:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("request_", "method", "named"),
    [
        (reward_pb2.ScoreRequest(prompt="p", response="word " * 60_000), "Score", "response:"),
        (reward_pb2.ScoreRequest(prompt="word " * 60_000, response="r"), "Score", "prompt:"),
        (
            reward_pb2.ScoreGroupRequest(prompt="word " * 60_000, responses=["a"]),
            "ScoreGroup",
            "prompt:",
        ),
        (
            reward_pb2.ScoreGroupRequest(prompt="p", responses=["a", "word " * 60_000]),
            "ScoreGroup",
            "responses[1]:",
        ),
    ],
)
async def test_text_too_long_for_a_template_names_the_request_field(
    templated: Harness, request_: Any, method: str, named: str
) -> None:
    """Over WHOLE_TEXT_MAX_CHARS a template conversation cannot be tokenised whole."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(templated.stub, method)(request_, timeout=120)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(named)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prompt": "p", "response": "word " * 60_000}, "response:"),
        ({"prompt": "word " * 60_000, "response": "r"}, "prompt:"),
    ],
)
async def test_slime_text_too_long_for_a_template_names_its_own_field(
    templated: Harness, body: dict[str, str], named: str
) -> None:
    """slime sends one sample: the error names its field, not ``response[0].response``."""
    url = f"http://127.0.0.1:{templated.server.http_port}/slime/reward"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
        session.post(url, json=body) as reply,
    ):
        status, answer = reply.status, await reply.json()
    assert status == 400 and answer["error"]["message"].startswith(named), answer
