"""The engine runs every batch through an IO binding (the code path CUDA uses, with the output
bound on the session's device); on the CPU it must give exactly what a plain
``session.run`` gives, offline and through a real server."""

from __future__ import annotations

import numpy as np
import pytest

from rmserve.engine.padding import pad_batch
from rmserve.engine.session import OrtEngine
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2
from tests.integration.test_server_scoring import random_pairs
from tests.support.harness import Harness

ASYNC = pytest.mark.asyncio(loop_scope="session")


def plain_run(engine: OrtEngine, pairs: list[PreparedPair]) -> np.ndarray:
    manifest = engine.artifact.manifest
    feed = pad_batch(pairs, manifest.preprocessing.pad_token_id, manifest.input_names)
    (rewards,) = engine.session.run([manifest.output_name], feed)
    return np.asarray(rewards, dtype=np.float32)


def test_bound_run_equals_plain_run_bit_for_bit(offline_engine: OrtEngine) -> None:
    texts = random_pairs(40, seed=7)
    prepared = offline_engine.artifact.preprocessor.prepare_many(
        [p for p, _ in texts], [r for _, r in texts]
    )
    for batch in (prepared[:1], prepared[:16], prepared[16:40], prepared[5:6]):
        bound, plain = offline_engine.score(batch), plain_run(offline_engine, batch)
        assert bound.dtype == np.float32 and np.array_equal(bound, plain), (bound, plain)


@ASYNC
async def test_served_rewards_equal_plain_runs(shared: Harness, offline_engine: OrtEngine) -> None:
    texts = random_pairs(12, seed=11)
    prepared = offline_engine.artifact.preprocessor.prepare_many(
        [p for p, _ in texts], [r for _, r in texts]
    )
    for (prompt, response), pair in zip(texts, prepared, strict=True):
        # One call at a time: each pair runs alone, as the plain run below does.
        reply = await shared.stub.Score(
            reward_pb2.ScoreRequest(prompt=prompt, response=response), timeout=60
        )
        assert np.float32(reply.reward) == plain_run(offline_engine, [pair])[0]
