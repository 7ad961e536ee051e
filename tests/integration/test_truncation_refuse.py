"""``truncation=refuse``: a pair over max_length is refused naming it, its tokens and the limit,
on every method of both fronts, before anything of its request reaches the engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import TOKENIZER_FILE
from rmserve.client import AsyncRewardClient, InvalidRequestError
from rmserve.testing import ScriptedEngine
from rmserve.text.preprocess import Preprocessor, load_tokenizer
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, make_settings, scripted_factory, serving
from tests.support.hf_families import FAMILIES, build

pytestmark = pytest.mark.asyncio(loop_scope="session")

Cli = Callable[[list[str]], tuple[int, list[str]]]
SHORT = ("What is 2 + 2?", "4.")


@dataclass
class Refusing:
    """A server with ``truncation=refuse`` and what the tests compare it with."""

    harness: Harness
    engine: ScriptedEngine
    full: Preprocessor  # the artifact's preprocessing without a limit: a pair's whole length
    max_length: int

    def tokens(self, prompt: str, response: str) -> int:
        return self.full.prepare(prompt, response).num_tokens

    def refused(self) -> float:
        return self.harness.metric("rmserve_truncation_refused_total")

    def scored_pairs(self) -> float:
        return self.harness.metric("rmserve_pairs_total")

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.harness.server.http_port}{path}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(url, json=body) as response,
        ):
            return response.status, await response.json()


@asynccontextmanager
async def refusing(artifact: Path) -> AsyncIterator[Refusing]:
    config = read_manifest(artifact).preprocessing
    tokenizer = load_tokenizer(artifact / TOKENIZER_FILE)
    full = Preprocessor(tokenizer, config.model_copy(update={"max_length": 1 << 20}), False)
    built, factory = scripted_factory()
    settings = make_settings(artifact, http_port=0, truncation="refuse", max_request_pairs=64)
    async with serving(settings, factory) as harness:
        yield Refusing(harness, built[0], full, config.max_length)


@pytest.fixture(scope="module")
async def pair_server(tiny_artifact: Path) -> AsyncIterator[Refusing]:
    async with refusing(tiny_artifact) as server:
        yield server


@pytest.fixture(scope="module")
async def template_server(
    tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> AsyncIterator[tuple[Refusing, Any]]:
    """A tiny Llama-3-style chat-template reward model (``rmserve import-hf``, max_length 64),
    and its HF tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("llama-refuse")
    hf_dir = build(FAMILIES["llama"], folder / "hf")
    artifact = folder / "artifact"
    code, lines = rmserve_cli(
        ["import-hf", "--model", str(hf_dir), "--out", str(artifact), "--max-length", "64"]
    )
    assert code == 0 and json.loads(lines[-1])["join"] == "template", lines
    async with refusing(artifact) as server:
        yield server, AutoTokenizer.from_pretrained(hf_dir)


def long_text(server: Refusing) -> str:
    return " ".join(["word"] * (2 * server.max_length))


def refusal(server: Refusing, where: str, tokens: int) -> str:
    """The start of the refusal message for a pair of ``tokens`` tokens."""
    return (
        f"{where}: {tokens} tokens (prompt and response with the model's special tokens) "
        f"is over max_length={server.max_length}"
    )


async def grpc_refusal(server: Refusing, call: Any, request: Any) -> str:
    """The INVALID_ARGUMENT message of ``call(request)``; checks nothing reached the engine."""
    calls, refused = server.engine.calls, server.refused()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert server.engine.calls == calls, "nothing of a refused request may be scored"
    assert server.refused() == refused + 1
    return str(raised.value.details())


async def http_refusal(server: Refusing, path: str, body: Any) -> str:
    calls, refused = server.engine.calls, server.refused()
    status, reply = await server.post(path, body)
    assert status == 400, reply
    assert reply["error"]["code"] == "INVALID_ARGUMENT"
    assert server.engine.calls == calls, "nothing of a refused request may be scored"
    assert server.refused() == refused + 1
    return str(reply["error"]["message"])


# gRPC -------------------------------------------------------------------------------------


async def test_score_names_the_pair_its_tokens_and_the_limit(pair_server: Refusing) -> None:
    s = pair_server
    prompt, response = "Say hello.", long_text(s)
    message = await grpc_refusal(
        s, s.harness.stub.Score, reward_pb2.ScoreRequest(prompt=prompt, response=response)
    )
    assert message.startswith(refusal(s, "the pair", s.tokens(prompt, response)))
    assert "truncation=refuse" in message


async def test_a_pair_exactly_at_max_length_is_scored_whole(pair_server: Refusing) -> None:
    s = pair_server
    words = next(
        n for n in range(s.max_length) if s.tokens("", " ".join(["word"] * n)) == s.max_length
    )
    fits = " ".join(["word"] * words)
    reply = await s.harness.stub.Score(reward_pb2.ScoreRequest(prompt="", response=fits))
    assert reply.num_tokens == s.max_length and not reply.truncated
    over = fits + " word"
    message = await grpc_refusal(
        s, s.harness.stub.Score, reward_pb2.ScoreRequest(prompt="", response=over)
    )
    assert message.startswith(refusal(s, "the pair", s.max_length + 1))


async def test_score_batch_names_the_index_and_scores_nothing(pair_server: Refusing) -> None:
    s = pair_server
    pairs = [SHORT, SHORT, SHORT, (long_text(s), "fine")]
    scored = s.scored_pairs()
    message = await grpc_refusal(
        s,
        s.harness.stub.ScoreBatch,
        reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
        ),
    )
    assert message.startswith(refusal(s, "pairs[3]", s.tokens(*pairs[3])))
    assert s.scored_pairs() == scored
    # the same request without its long pair is scored, untruncated
    reply = await s.harness.stub.ScoreBatch(
        reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs[:3]]
        )
    )
    assert len(reply.results) == 3 and not any(r.truncated for r in reply.results)


async def test_a_windowed_text_is_at_least_its_counted_tokens(pair_server: Refusing) -> None:
    """A text too long to tokenise whole is tokenised from a window of it: its count is a
    lower bound and the message says so."""
    s = pair_server
    huge = " ".join(["word"] * 200_000)
    message = await grpc_refusal(
        s,
        s.harness.stub.ScoreBatch,
        reward_pb2.ScoreBatchRequest(
            pairs=[
                reward_pb2.Pair(prompt="q", response="a"),
                reward_pb2.Pair(prompt="q", response=huge),
            ]
        ),
    )
    assert message.startswith("pairs[1]: at least ")
    counted = int(message.removeprefix("pairs[1]: at least ").split()[0])
    assert s.max_length < counted < s.tokens("q", huge)


async def test_score_group_names_the_response(pair_server: Refusing) -> None:
    s = pair_server
    prompt, responses = "Write a haiku.", ["Waves fold.", "Foam.", long_text(s)]
    message = await grpc_refusal(
        s,
        s.harness.stub.ScoreGroup,
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses),
    )
    assert message.startswith(refusal(s, "responses[2]", s.tokens(prompt, responses[2])))


async def test_prefer_names_the_response_over_the_limit(pair_server: Refusing) -> None:
    s = pair_server
    prompt, a, b = "Explain gravity.", "Mass attracts mass.", long_text(s)
    message = await grpc_refusal(
        s,
        s.harness.stub.Prefer,
        reward_pb2.PreferRequest(prompt=prompt, response_a=a, response_b=b),
    )
    assert message.startswith(refusal(s, "items[0].response_b", s.tokens(prompt, b)))


async def test_prefer_batch_names_the_item_and_response(pair_server: Refusing) -> None:
    s = pair_server
    long = long_text(s)
    items = [("q", "a", "b"), ("q", long, "b"), ("q", "a", long)]
    message = await grpc_refusal(
        s,
        s.harness.stub.PreferBatch,
        reward_pb2.PreferBatchRequest(
            items=[reward_pb2.PreferItem(prompt=p, response_a=a, response_b=b) for p, a, b in items]
        ),
    )
    assert message.startswith(refusal(s, "items[1].response_a", s.tokens("q", long)))


# HTTP -------------------------------------------------------------------------------------


async def test_get_reward_names_the_query(pair_server: Refusing) -> None:
    s = pair_server
    prompts = ["a ", "b ", "c "]
    responses = ["x", "y", long_text(s)]
    body = {"query": [p + r for p, r in zip(prompts, responses, strict=True)], "prompts": prompts}
    message = await http_refusal(s, "/get_reward", body)
    assert message.startswith(refusal(s, "query[2]", s.tokens(prompts[2], responses[2])))


async def test_slime_names_the_pair(pair_server: Refusing) -> None:
    s = pair_server
    body = {"prompt": long_text(s), "response": "4.", "label": "4"}
    message = await http_refusal(s, "/slime/reward", body)
    assert message.startswith(refusal(s, "the pair", s.tokens(long_text(s), "4.")))


async def test_classify_messages_names_the_conversation(pair_server: Refusing) -> None:
    s = pair_server
    messages = [
        {"role": "user", "content": "Say it."},
        {"role": "assistant", "content": long_text(s)},
    ]
    message = await http_refusal(s, "/classify", {"messages": messages})
    assert message.startswith("messages[0]: ")
    assert f"is over max_length={s.max_length}" in message


async def test_classify_input_names_the_text_on_a_template_model(
    template_server: tuple[Refusing, Any],
) -> None:
    """verl's request: each conversation rendered by the model's own chat template, BOS off."""
    s, tokenizer = template_server
    prompt, long = "Say hello!", long_text(s)
    texts = []
    for response in ("Hello.", long):
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        texts.append(text.removeprefix(tokenizer.bos_token))
    message = await http_refusal(s, "/classify", {"input": texts})
    assert message.startswith(refusal(s, "input[1]", s.tokens(prompt, long)))


async def test_score_group_on_a_template_model_counts_the_whole_conversation(
    template_server: tuple[Refusing, Any],
) -> None:
    s, _ = template_server
    prompt, responses = "Say hello!", ["Hello.", long_text(s)]
    message = await grpc_refusal(
        s,
        s.harness.stub.ScoreGroup,
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses),
    )
    assert message.startswith(refusal(s, "responses[1]", s.tokens(prompt, responses[1])))
    fits = await s.harness.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses[:1])
    )
    assert not fits.results[0].truncated


async def test_the_client_names_the_refused_pair_in_the_callers_input(
    pair_server: Refusing,
) -> None:
    """RewardClient chunks 150 pairs to the server's max_request_pairs (64): the refusal of the
    third chunk's pair 2 is the caller's pair 130."""
    s = pair_server
    prompts = [f"q{i}" for i in range(150)]
    responses = ["fine"] * 150
    responses[130] = long_text(s)
    target = f"127.0.0.1:{s.harness.server.port}"
    async with AsyncRewardClient(target, max_attempts=1) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.score(prompts, responses)
    error = caught.value
    assert error.index == 130 and error.field is None
    assert str(error).startswith(
        f"INVALID_ARGUMENT: pairs[130]: {s.tokens('q130', responses[130])}"
    )
    assert error.details.startswith("pairs[2]: ")  # the server's message, chunk-relative
