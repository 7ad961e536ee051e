"""A K=3 ensemble of the tiny model served through a real server: every aggregate, the
members' stats, Prefer, GetModelInfo and /get_reward checked against offline numpy on the
members' own graphs; bad options refused; a single model unchanged by ensemble options."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.v1 import reward_pb2
from tests.support.ensemble_texts import (
    MATH_TOL,
    OFFLINE_TOL,
    TEXTS,
    TRAINING_BOUND_S,
    batch_request,
    expected_aggregate,
    member_stats_of,
    offline_member_rewards,
)
from tests.support.harness import Harness, make_settings, serving

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(TRAINING_BOUND_S)]

PENALTY_DEFAULT = 0.75


@pytest.fixture(scope="module")
def offline_raw(tiny_ensemble: Any) -> np.ndarray:
    return offline_member_rewards(tiny_ensemble.members)


@pytest.fixture(scope="module")
async def ensemble_server(tiny_ensemble: Any) -> AsyncIterator[Harness]:
    settings = make_settings(
        tiny_ensemble.artifact,
        http_port=0,
        max_batch_size=4,  # several engine batches per request
        ensemble_uncertainty_penalty=PENALTY_DEFAULT,
    )
    async with serving(settings) as harness:
        yield harness


@pytest.mark.parametrize(
    ("aggregate", "penalty", "how", "lam"),
    [
        (reward_pb2.AGGREGATE_UNSPECIFIED, None, "mean", 0.0),  # the server default: mean
        (reward_pb2.AGGREGATE_MEAN, None, "mean", 0.0),
        (reward_pb2.AGGREGATE_MIN, None, "min", 0.0),
        (reward_pb2.AGGREGATE_MEAN_MINUS_STD, 0.3, "mean_minus_std", 0.3),
        (reward_pb2.AGGREGATE_MEAN_MINUS_STD, None, "mean_minus_std", PENALTY_DEFAULT),
        (reward_pb2.AGGREGATE_MEAN_MINUS_STD, 0.0, "mean_minus_std", 0.0),
    ],
)
async def test_every_aggregate_equals_offline_numpy(
    ensemble_server: Harness,
    tiny_ensemble: Any,
    offline_raw: np.ndarray,
    aggregate: int,
    penalty: float | None,
    how: str,
    lam: float,
) -> None:
    options: dict[str, object] = {"aggregate": aggregate, "return_members": True}
    if penalty is not None:
        options["uncertainty_penalty"] = penalty
    reply = await ensemble_server.stub.ScoreBatch(batch_request(**options), timeout=60)
    z = np.array([list(r.ensemble.member_rewards) for r in reply.results])
    rewards = np.array([r.reward for r in reply.results])
    # the served math, on the member rewards the reply carries
    np.testing.assert_allclose(rewards, expected_aggregate(z, how, lam), atol=MATH_TOL, rtol=0)
    for r, row in zip(reply.results, z, strict=True):
        assert r.ensemble.mean == pytest.approx(row.mean(), abs=MATH_TOL)
        assert r.ensemble.std == pytest.approx(row.std(ddof=0), abs=MATH_TOL)
        assert r.ensemble.min == pytest.approx(row.min(), abs=MATH_TOL)
    # normalisation applied: each member's own held-out stats, against its own graph offline
    means, stds = member_stats_of(read_manifest(tiny_ensemble.artifact))
    offline_z = (offline_raw - means) / stds
    np.testing.assert_allclose(z, offline_z, atol=OFFLINE_TOL, rtol=0)
    np.testing.assert_allclose(
        rewards, expected_aggregate(offline_z, how, lam), atol=OFFLINE_TOL, rtol=0
    )


async def test_members_only_on_request_and_normalize_changes_nothing(
    ensemble_server: Harness,
) -> None:
    plain = await ensemble_server.stub.ScoreBatch(batch_request(), timeout=60)
    normalized = await ensemble_server.stub.ScoreBatch(batch_request(normalize=True), timeout=60)
    assert all(r.HasField("ensemble") and not r.ensemble.member_rewards for r in plain.results)
    assert [r.reward for r in plain.results] == pytest.approx(
        [r.reward for r in normalized.results], abs=OFFLINE_TOL
    )


async def test_each_member_is_batch_invariant(ensemble_server: Harness) -> None:
    batch = await ensemble_server.stub.ScoreBatch(batch_request(return_members=True), timeout=60)
    for (prompt, response), in_batch in zip(TEXTS, batch.results, strict=True):
        alone = await ensemble_server.stub.Score(
            reward_pb2.ScoreRequest(prompt=prompt, response=response, return_members=True),
            timeout=60,
        )
        np.testing.assert_allclose(
            list(alone.ensemble.member_rewards),
            list(in_batch.ensemble.member_rewards),
            atol=OFFLINE_TOL,
            rtol=0,
        )
        assert alone.reward == pytest.approx(in_batch.reward, abs=OFFLINE_TOL)
        assert alone.num_tokens == in_batch.num_tokens


async def test_prefer_matches_the_offline_formula(
    ensemble_server: Harness, offline_raw: np.ndarray
) -> None:
    index = [(0, 1), (2, 3), (1, 0), (4, 4), (5, 6)]
    items = [
        reward_pb2.PreferItem(prompt=TEXTS[a][0], response_a=TEXTS[a][1], response_b=TEXTS[b][1])
        for a, b in index
    ]
    reply = await ensemble_server.stub.PreferBatch(
        reward_pb2.PreferBatchRequest(items=items), timeout=60
    )
    single = await ensemble_server.stub.Prefer(
        reward_pb2.PreferRequest(
            prompt=TEXTS[0][0], response_a=TEXTS[0][1], response_b=TEXTS[1][1]
        ),
        timeout=60,
    )
    for (a, b), result in zip(index, reply.results, strict=True):
        # same prompt on both sides in the request; recompute b's raw rewards under a's prompt
        raw_a = offline_raw[a]
        raw_b = offline_raw[b] if TEXTS[a][0] == TEXTS[b][0] else None
        if raw_b is None:
            continue
        each = 1.0 / (1.0 + np.exp(-(raw_a - raw_b)))
        assert result.probability_a == pytest.approx(each.mean(), abs=OFFLINE_TOL)
        assert result.HasField("probability_a_std")
        assert result.probability_a_std == pytest.approx(each.std(ddof=0), abs=OFFLINE_TOL)
        assert result.reward_a == pytest.approx(raw_a.mean(), abs=OFFLINE_TOL)
    assert reply.results[3].probability_a == 0.5 and reply.results[3].probability_a_std == 0.0
    assert reply.results[0].probability_a + reply.results[2].probability_a == pytest.approx(1.0)
    assert single.result.probability_a == pytest.approx(reply.results[0].probability_a, abs=1e-6)


async def test_model_info_lists_the_members(ensemble_server: Harness, tiny_ensemble: Any) -> None:
    info = await ensemble_server.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
    members = [read_manifest(m) for m in tiny_ensemble.members]
    assert [m.version for m in info.members] == [m.version for m in members]
    assert [m.normalization_mean for m in info.members] == [m.normalization.mean for m in members]
    assert [m.normalization_std for m in info.members] == [m.normalization.std for m in members]
    assert info.default_aggregate == "mean" and info.ensemble_kind == "full"
    assert info.default_uncertainty_penalty == PENALTY_DEFAULT
    assert (info.normalization_mean, info.normalization_std) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"uncertainty_penalty": -0.5}, "uncertainty_penalty"),
        ({"uncertainty_penalty": math.nan}, "uncertainty_penalty"),
        ({"uncertainty_penalty": math.inf}, "uncertainty_penalty"),
        ({"aggregate": 9}, "aggregate"),
    ],
)
async def test_bad_options_are_invalid_argument(
    ensemble_server: Harness, options: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ensemble_server.stub.ScoreBatch(batch_request(**options), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(f"{field}: ")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ensemble_server.stub.Score(
            reward_pb2.ScoreRequest(prompt="p", response="r", **options),  # type: ignore[arg-type]
            timeout=60,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_http_get_reward_returns_the_default_aggregate(ensemble_server: Harness) -> None:
    url = f"http://127.0.0.1:{ensemble_server.server.http_port}/get_reward"
    body = {"query": [p + r for p, r in TEXTS], "prompts": [p for p, _ in TEXTS]}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(url, json=body) as response,
    ):
        assert response.status == 200
        rewards = (await response.json())["rewards"]
    reply = await ensemble_server.stub.ScoreBatch(batch_request(), timeout=60)
    assert rewards == pytest.approx([r.reward for r in reply.results], abs=OFFLINE_TOL)


async def test_a_single_model_ignores_ensemble_options(shared: Harness) -> None:
    plain = await shared.stub.ScoreBatch(batch_request(normalize=True), timeout=60)
    asked = await shared.stub.ScoreBatch(
        batch_request(
            normalize=True,
            aggregate=reward_pb2.AGGREGATE_MIN,
            uncertainty_penalty=-1.0,
            return_members=True,
        ),
        timeout=60,
    )
    assert [r.reward for r in asked.results] == pytest.approx(
        [r.reward for r in plain.results], abs=OFFLINE_TOL
    )
    assert not any(r.HasField("ensemble") for r in asked.results)
    prefer = await shared.stub.Prefer(
        reward_pb2.PreferRequest(prompt="p", response_a="a", response_b="b"), timeout=60
    )
    assert not prefer.result.HasField("probability_a_std")
    info = await shared.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
    assert not info.members and info.default_aggregate == "" and info.ensemble_kind == ""


async def test_score_group_serves_the_aggregate_with_the_spread(ensemble_server: Harness) -> None:
    prompt = TEXTS[0][0]
    responses = [r for _, r in TEXTS]
    options = {"aggregate": reward_pb2.AGGREGATE_MIN, "return_members": True}
    group = await ensemble_server.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses, **options),  # type: ignore[arg-type]
        timeout=60,
    )
    batch = await ensemble_server.stub.ScoreBatch(
        reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=prompt, response=r) for r in responses],
            **options,  # type: ignore[arg-type]
        ),
        timeout=60,
    )
    rewards = np.array([r.reward for r in group.results])
    np.testing.assert_allclose(rewards, [r.reward for r in batch.results], atol=OFFLINE_TOL)
    z = np.array([list(r.ensemble.member_rewards) for r in group.results])
    np.testing.assert_allclose(rewards, z.min(axis=1), atol=MATH_TOL, rtol=0)
    assert group.mean == pytest.approx(rewards.mean(), abs=MATH_TOL)
    assert group.std == pytest.approx(rewards.std(ddof=1), abs=MATH_TOL)


async def test_member_disagreement_feeds_the_ensemble_std_histogram(
    ensemble_server: Harness,
) -> None:
    count = ensemble_server.metric("rmserve_ensemble_std_count")
    total = ensemble_server.metric("rmserve_ensemble_std_sum")
    reply = await ensemble_server.stub.ScoreBatch(batch_request(), timeout=60)
    stds = [r.ensemble.std for r in reply.results]
    assert ensemble_server.metric("rmserve_ensemble_std_count") == count + len(stds)
    assert ensemble_server.metric("rmserve_ensemble_std_sum") == pytest.approx(
        total + sum(stds), abs=1e-6
    )
