"""The HTTP shapes RL trainers already send, on the same core as gRPC.

- verl's reward loop (volcengine/verl ``verl/experimental/reward_loop/reward_loop.py``,
  ``RewardLoopWorker.compute_score_disrm`` and ``_post_request``): aiohttp
  ``session.post(f"http://{address}/classify", json={"model": <RM path>, "input": <text>,
  "activation": False})``, the text rendered by ``apply_chat_template(chat,
  add_generation_prompt=False, tokenize=False)`` with a leading BOS text removed; it reads
  ``output["data"][-1]["probs"][-1]``. Reproduced here byte for byte (the same aiohttp call with
  the same JSON), since verl itself needs ray and a GPU stack to import. vLLM's reply shape:
  vllm-project/vllm ``vllm/entrypoints/pooling/classify/protocol.py`` (ClassificationResponse).
- slime (THUDM/slime ``slime/rollout/rm_hub/__init__.py``, ``remote_rm``): aiohttp
  ``session.post(args.rm_url, json={"prompt", "response", "label"})`` and the reward is
  ``await resp.json()``: a bare number.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rmserve.rewards.ensemble import sigmoid
from rmserve.text.conversation import render_prompt
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving
from tests.support.hf_families import FAMILIES, build

pytestmark = pytest.mark.asyncio(loop_scope="session")

Cli = Callable[[list[str]], tuple[int, list[str]]]
SLIME = "/slime/reward"


@pytest.fixture(scope="module")
async def front(tiny_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, http_port=0, max_request_pairs=64)
    async with serving(settings) as harness:
        yield harness


async def post(h: Harness, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    url = f"http://127.0.0.1:{h.server.http_port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(url, json=body) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def grpc_score(h: Harness, prompt: str, response: str) -> float:
    reply = await h.stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response))
    return float(reply.reward)


def requests_total(h: Harness, method: str, code: str) -> float:
    return h.metric("rmserve_requests_total", method=method, code=code)


# slime ------------------------------------------------------------------------------------


async def test_slime_gets_a_bare_number_equal_to_score(front: Harness) -> None:
    before = requests_total(front, "http_slime_reward", "OK")
    body = {"prompt": "What is 2 + 2?", "response": "4.", "label": "4"}
    status, reward, _ = await post(front, SLIME, body)
    assert status == 200 and isinstance(reward, float)
    assert reward == await grpc_score(front, "What is 2 + 2?", "4.")
    assert requests_total(front, "http_slime_reward", "OK") == before + 1


async def test_slime_chat_prompt_is_rendered_as_the_trl_adapter_does(front: Harness) -> None:
    messages = [{"role": "user", "content": "Capital of France?"}]
    body = {"prompt": messages, "response": " Paris.", "label": None}
    status, reward, _ = await post(front, SLIME, body)
    assert status == 200
    assert reward == await grpc_score(front, render_prompt(messages), " Paris.")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "p", "label": 1}, "response"),
        ({"response": "r"}, "prompt"),
        ({"prompt": [{"role": "robot", "content": "x"}], "response": "r"}, "prompt[0].role"),
        ([1, 2], "body"),
    ],
)
async def test_bad_slime_request_is_400_naming_the_field(
    front: Harness, body: Any, field: str
) -> None:
    status, reply, _ = await post(front, SLIME, body)
    assert status == 400 and reply["error"]["message"].startswith(field), reply


# /classify on a pair-encoded artifact ------------------------------------------------------


async def test_classify_messages_equal_score(front: Harness) -> None:
    conversation = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": " Paris."},
    ]
    expected = await grpc_score(front, render_prompt(conversation[:1]), " Paris.")
    body = {"model": "rm", "messages": conversation, "use_activation": False}
    status, reply, _ = await post(front, "/classify", body)
    assert status == 200, reply
    assert (reply["object"], reply["model"]) == ("list", "rm")
    (data,) = reply["data"]
    assert (data["index"], data["num_classes"], data["probs"]) == (0, 1, [expected])
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > 0
    body["use_activation"] = True
    status, reply, _ = await post(front, "/classify", body)
    assert reply["data"][0]["probs"] == [pytest.approx(sigmoid(expected), abs=1e-12)]


async def test_classify_text_on_a_pair_artifact_is_400_saying_send_messages(
    front: Harness,
) -> None:
    status, reply, _ = await post(front, "/classify", {"model": "rm", "input": "some text"})
    assert status == 400
    assert (
        reply["error"]["message"].startswith("input:") and "messages" in reply["error"]["message"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": ["ok", 3]}, "input[1]"),
        ({"input": []}, "input"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages"),
        ({"input": "a", "messages": []}, "send exactly one"),
        ({"input": "a", "use_activation": "yes"}, "use_activation"),
        ({"input": "a", "model": 7}, "model"),
    ],
)
async def test_bad_classify_request_is_400_naming_the_field(
    front: Harness, body: Any, field: str
) -> None:
    before = requests_total(front, "http_classify", "INVALID_ARGUMENT")
    status, reply, _ = await post(front, "/classify", body)
    assert status == 400 and reply["error"]["message"].startswith(field), reply
    assert requests_total(front, "http_classify", "INVALID_ARGUMENT") == before + 1


# /classify on a chat-template artifact, exactly as verl sends it ----------------------------


@pytest.fixture(scope="module")
async def templated(
    tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> AsyncIterator[tuple[Harness, Any]]:
    """A tiny Llama-3-style reward model (chat template, BOS added by the tokenizer) imported
    with ``rmserve import-hf``, served with the HTTP front; and its HF tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("llama")
    hf_dir = build(FAMILIES["llama"], folder / "hf")
    artifact = folder / "artifact"
    code, lines = rmserve_cli(
        ["import-hf", "--model", str(hf_dir), "--out", str(artifact), "--max-length", "64"]
    )
    assert code == 0 and json.loads(lines[-1])["join"] == "template"
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    async with serving(make_settings(artifact, http_port=0)) as harness:
        yield harness, tokenizer


def verl_rm_prompt(tokenizer: Any, prompt: str, response: str) -> str:
    """verl's ``_preprocess_reward_inputs``: render [user, assistant], strip a leading BOS."""
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text: str = tokenizer.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)
    if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token) :]
    return text


async def test_verl_classify_request_equals_grpc_score(templated: tuple[Harness, Any]) -> None:
    harness, tokenizer = templated
    pairs = [
        ("What is the capital of France?", "Paris."),
        ("  Explain photosynthesis.\n", "\n\nPlants turn light into sugar.  "),
        ("Write a haiku about the sea. " * 20, "Waves fold into foam."),  # prompt cut left
    ]
    url = f"http://127.0.0.1:{harness.server.http_port}/classify"
    for prompt, response in pairs:
        payloads = {
            "model": "/models/tiny-llama-rm",
            "input": verl_rm_prompt(tokenizer, prompt, response),
            "activation": False,
        }
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(url, json=payloads) as resp,
        ):
            resp.raise_for_status()
            output = await resp.json()
        rm_score = output["data"][-1]["probs"][-1]
        reply = await harness.stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response))
        assert rm_score == reply.reward
        assert output["usage"]["prompt_tokens"] == reply.num_tokens
    assert reply.truncated  # the last one was cut, by Score's rule


async def test_classify_text_with_its_bos_and_messages_agree(
    templated: tuple[Harness, Any],
) -> None:
    harness, tokenizer = templated
    text = verl_rm_prompt(tokenizer, "Say hi", "Hi!")
    conversation = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}]
    bodies = [
        {"input": [text, tokenizer.bos_token + text], "use_activation": False},
        {"messages": conversation, "use_activation": False},
    ]
    probs = []
    for body in bodies:
        status, reply, _ = await post(harness, "/classify", body)
        assert status == 200, reply
        probs += [d["probs"][0] for d in reply["data"]]
    assert probs == [await grpc_score(harness, "Say hi", "Hi!")] * 3


async def test_classify_text_in_another_template_is_400(templated: tuple[Harness, Any]) -> None:
    harness, _ = templated
    chatml = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    status, reply, _ = await post(harness, "/classify", {"input": ["fine?", chatml]})
    assert status == 400 and reply["error"]["message"].startswith("input[0]:")


# overload and loading, for both new endpoints --------------------------------------------

ENDPOINTS = [
    ("/classify", "http_classify", {"messages": [{"role": "assistant", "content": "x"}]}),
    (SLIME, "http_slime_reward", {"prompt": "q", "response": "x", "label": None}),
]


@pytest.mark.parametrize(("path", "method", "body"), ENDPOINTS)
async def test_overload_is_429_with_retry_after(
    tiny_artifact: Path, path: str, method: str, body: Any
) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, http_port=0, max_queue_pairs=2, max_request_pairs=2)
    async with serving(settings, factory) as harness:
        engine = built[0]
        try:
            held = [asyncio.ensure_future(post(harness, path, body))]
            await eventually(lambda: engine.calls == 1, "the first batch in the engine")
            held += [asyncio.ensure_future(post(harness, path, body)) for _ in range(2)]
            await eventually(lambda: harness.metric("rmserve_queue_pairs") == 2, "a full queue")
            status, reply, headers = await post(harness, path, body)
            assert status == 429 and reply["error"]["code"] == "RESOURCE_EXHAUSTED"
            assert int(headers["Retry-After"]) >= 1
            assert requests_total(harness, method, "RESOURCE_EXHAUSTED") == 1
            engine.gate.set()
            assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200, 200]
        finally:
            engine.gate.set()


@pytest.mark.parametrize(("path", "method", "body"), ENDPOINTS)
async def test_loading_server_is_503(
    tiny_artifact: Path, path: str, method: str, body: Any
) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, http_port=0, warmup_runs=1)
    async with serving(settings, factory, load=False) as harness:
        try:
            status, reply, headers = await post(harness, path, body)
            assert status == 503 and reply["error"]["code"] == "UNAVAILABLE"
            assert "Retry-After" in headers
            assert requests_total(harness, method, "UNAVAILABLE") == 1
        finally:
            await eventually(lambda: bool(built), "the engine to be built")
            built[0].gate.set()
