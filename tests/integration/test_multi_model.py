"""One server of two models with different tokenizers (the tiny BERT-like encoder, served with
``--artifact`` and named by its manifest, and a tiny Qwen3 with a chat template, ``--model
qwen=...``) answers each model exactly as a server of that artifact alone does, over gRPC and
every HTTP front; unnamed requests go to the default; unknown names are refused listing the
served ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from rmserve.artifact.manifest import ArtifactError
from rmserve.server.app import RewardServer
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, make_settings, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

TINY = "reward-model"  # the tiny artifact's manifest name
QWEN = "qwen"
PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("", ""),
    ("Say hello", "Hello! How can I help you today?"),
    ("write a haiku about sea waves " * 30, "waves fold into foam"),  # cut to 128 tokens
]
GROUP = ("explain how", ["one two", "three four five", "", "six seven eight " * 10])
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
async def alone(tiny_artifact: Path, qwen_artifact: Path) -> AsyncIterator[dict[str, Harness]]:
    """A server of each artifact by itself, as before this server held several."""
    async with (
        serving(make_settings(tiny_artifact, http_port=0)) as tiny,
        serving(make_settings(qwen_artifact, http_port=0)) as qwen,
    ):
        yield {TINY: tiny, QWEN: qwen}


async def post(h: Harness, path: str, body: Any) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{h.server.http_port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(url, json=body) as response,
    ):
        return response.status, await response.json()


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


@pytest.mark.parametrize("name", [TINY, QWEN])
async def test_each_model_answers_as_its_own_server_over_grpc(
    two_models: Harness, alone: dict[str, Harness], name: str
) -> None:
    single = alone[name].stub
    both = two_models.stub
    for prompt, response in PAIRS:
        mine = await both.Score(
            reward_pb2.ScoreRequest(prompt=prompt, response=response, model=name)
        )
        theirs = await single.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response))
        assert close(mine.reward, theirs.reward), (name, prompt[:20], mine.reward, theirs.reward)
        assert (mine.num_tokens, mine.truncated) == (theirs.num_tokens, theirs.truncated)
        assert (mine.model_version, mine.model) == (theirs.model_version, name)
    pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    mine_b = await both.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs, model=name))
    theirs_b = await single.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs))
    assert all(
        close(a.reward, b.reward) for a, b in zip(mine_b.results, theirs_b.results, strict=True)
    )
    prompt, responses = GROUP
    mine_g = await both.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses, model=name)
    )
    theirs_g = await single.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses)
    )
    assert all(close(a, b) for a, b in zip(mine_g.advantages, theirs_g.advantages, strict=True))
    assert close(mine_g.mean, theirs_g.mean) and mine_g.model == name
    items = [reward_pb2.PreferItem(prompt=p, response_a=r, response_b="paris") for p, r in PAIRS]
    mine_p = await both.PreferBatch(reward_pb2.PreferBatchRequest(items=items, model=name))
    theirs_p = await single.PreferBatch(reward_pb2.PreferBatchRequest(items=items))
    for a, b in zip(mine_p.results, theirs_p.results, strict=True):
        assert close(a.probability_a, b.probability_a) and close(a.reward_a, b.reward_a)
    one = reward_pb2.PreferRequest(prompt="say hello", response_a="hello", response_b="")
    one.model = name
    mine_1 = await both.Prefer(one)
    one.ClearField("model")
    assert close(mine_1.result.probability_a, (await single.Prefer(one)).result.probability_a)


async def test_unnamed_requests_go_to_the_default_model(
    two_models: Harness, alone: dict[str, Harness]
) -> None:
    prompt, response = PAIRS[2]
    request = reward_pb2.ScoreRequest(prompt=prompt, response=response)
    unnamed = await two_models.stub.Score(request)
    assert unnamed.model == TINY
    assert close(unnamed.reward, (await alone[TINY].stub.Score(request)).reward)


@pytest.mark.parametrize("name", [TINY, QWEN])
async def test_each_model_answers_as_its_own_server_over_http(
    two_models: Harness, alone: dict[str, Harness], name: str
) -> None:
    single = alone[name]
    prompts = [p for p, _ in PAIRS]
    body = {"query": [p + r for p, r in PAIRS], "prompts": prompts, "normalize": True}
    status, theirs = await post(single, "/get_reward", body)
    assert status == 200, theirs
    for path, named in [
        ("/get_reward", {**body, "model": name}),
        (f"/get_reward?model={name}", body),
    ]:
        status, mine = await post(two_models, path, named)
        assert status == 200, mine
        assert all(close(a, b) for a, b in zip(mine["rewards"], theirs["rewards"], strict=True))
        assert mine["model_version"] == theirs["model_version"]
    for prompt, response in PAIRS[:3]:
        slime = {"prompt": prompt, "response": response, "label": None}
        status, theirs_s = await post(single, "/slime/reward", slime)
        assert status == 200
        status, mine_s = await post(two_models, f"/slime/reward?model={name}", slime)
        assert status == 200 and close(mine_s, theirs_s)
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        classify = {"messages": chat, "use_activation": False}
        status, theirs_c = await post(single, "/classify", classify)
        assert status == 200, theirs_c
        status, mine_c = await post(two_models, "/classify", {**classify, "model": name})
        assert status == 200, mine_c
        assert close(mine_c["data"][0]["probs"][0], theirs_c["data"][0]["probs"][0])
        assert mine_c["model"] == name and mine_c["usage"] == theirs_c["usage"]


async def test_an_unknown_model_is_refused_naming_the_served_ones(two_models: Harness) -> None:
    before = two_models.metric("rmserve_requests_total", method="Score", code="INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await two_models.stub.Score(reward_pb2.ScoreRequest(prompt="", response="", model="gpt"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        info.value.details() == "model: model 'gpt' is not served here; served: reward-model, qwen"
    )
    after = two_models.metric("rmserve_requests_total", method="Score", code="INVALID_ARGUMENT")
    assert after == before + 1
    bodies = [
        ("/get_reward", {"query": ["a"], "prompts": [""], "model": "gpt"}),
        ("/get_reward?model=gpt", {"query": ["a"], "prompts": [""]}),
        ("/slime/reward?model=gpt", {"prompt": "", "response": "a"}),
        ("/classify", {"model": "/models/some-rm", "messages": [{"role": "user", "content": "x"}]}),
    ]
    for path, body in bodies:
        status, reply = await post(two_models, path, body)
        assert status == 400, (path, reply)
        assert "served: reward-model, qwen" in reply["error"]["message"], reply
    status, reply = await post(
        two_models, "/get_reward?model=qwen", {"query": ["a"], "prompts": [""], "model": TINY}
    )
    assert status == 400 and reply["error"]["message"].startswith("model: the body names")


async def test_model_info_lists_every_model(two_models: Harness, qwen_artifact: Path) -> None:
    info = await two_models.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    assert (info.model, info.is_default, info.name) == (TINY, True, TINY)
    assert [(m.model, m.is_default) for m in info.models] == [(TINY, True), (QWEN, False)]
    qwen = await two_models.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(model=QWEN))
    assert (qwen.model, qwen.name, qwen.version, qwen.max_length) == (QWEN, "qwen", "q1", 128)
    assert not qwen.is_default and qwen.normalization_std != 1.0  # stats measured at import
    assert [m.version for m in qwen.models] == [info.version, "q1"]


async def test_metrics_carry_the_model_label(two_models: Harness) -> None:
    def count(model: str) -> float:
        return two_models.metric(
            "rmserve_model_requests_total", model=model, method="ScoreBatch", code="OK"
        )

    def pairs(model: str) -> float:
        return two_models.metric("rmserve_model_pairs_total", model=model)

    before = {m: (count(m), pairs(m)) for m in (TINY, QWEN)}
    batch = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    await two_models.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=batch, model=QWEN))
    assert (count(QWEN), pairs(QWEN)) == (before[QWEN][0] + 1, before[QWEN][1] + len(PAIRS))
    assert (count(TINY), pairs(TINY)) == before[TINY]
    models = {
        sample.labels["model"]
        for family in two_models.server.metrics.registry.collect()
        for sample in family.samples
        if "model" in sample.labels
    }
    assert models == {TINY, QWEN}
    assert two_models.metric("rmserve_model_queue_pairs", model=QWEN) == 0


@pytest.mark.parametrize(
    ("models", "default", "says"),
    [
        ({TINY: "qwen"}, None, "model 'reward-model' is named twice"),
        ({QWEN: "missing"}, None, "missing"),
        ({QWEN: "qwen"}, "gpt", "default_model 'gpt' is not one of the served models"),
    ],
)
async def test_a_bad_set_of_models_stops_the_start_saying_why(
    tiny_artifact: Path,
    qwen_artifact: Path,
    tmp_path: Path,
    models: dict[str, str],
    default: str | None,
    says: str,
) -> None:
    folders = {"qwen": qwen_artifact, "missing": tmp_path / "missing"}
    settings = make_settings(
        tiny_artifact,
        models={name: folders[key] for name, key in models.items()},
        default_model=default,
    )
    server = RewardServer(settings)
    await server.start()
    try:
        with pytest.raises(ArtifactError) as info:
            await server.load()
        assert says in str(info.value)
        assert server.models is None and server.core is None
    finally:
        await server.stop()


async def test_rmserve_score_and_prefer_name_a_model(
    two_models: Harness, alone: dict[str, Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    from rmserve.cli import main

    prompt, response = PAIRS[0]
    target = ["--target", f"127.0.0.1:{two_models.server.port}", "--model", QWEN]
    argv = ["score", *target, "--prompt", prompt, "--response", response]
    assert await asyncio.to_thread(main, argv) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    theirs = await alone[QWEN].stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response))
    assert out["model"] == QWEN and close(out["reward"], theirs.reward)
    argv = ["prefer", *target, "--prompt", prompt, "--response-a", response, "--response-b", ""]
    assert await asyncio.to_thread(main, argv) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["model"] == QWEN and out["model_version"] == "q1"
