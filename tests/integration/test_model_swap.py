"""A named model's version swapped while serving (``ModelAdmin.SwapModel``): guarded by the
server's token, the new version checked and warmed up before the switch, requests holding the
old version finish on it, every reply says its version, the old session is freed, and a swap
that cannot be made (memory, a bad artifact, a failed check) leaves the old version serving."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from rmserve.artifact.manifest import ArtifactError
from rmserve.engine.session import CPU, Engine, LoadedArtifact, OrtEngine, load_artifact
from rmserve.engine.threads import engine_workers
from rmserve.server.settings import ServerSettings
from rmserve.serving.models_memory import engine_footprint, required_bytes
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.artifact_copies import move_a_head_weight
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "swap-secret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
PAIR = ("what is the capital of france ?", "paris .")
MIB = 1 << 20


def offline_reward(artifact: Path) -> float:
    loaded = load_artifact(artifact)
    engine = OrtEngine(loaded, provider="cpu", intra_op_threads=1)
    return float(engine.score(loaded.preprocessor.prepare_many([PAIR[0]], [PAIR[1]]))[0])


def admin(h: Harness) -> reward_pb2_grpc.ModelAdminStub:
    return reward_pb2_grpc.ModelAdminStub(h.channel)  # type: ignore[no-untyped-call]


async def swap(h: Harness, model: str, artifact: Path | str) -> reward_pb2.SwapModelResponse:
    request = reward_pb2.SwapModelRequest(model=model, artifact=str(artifact))
    reply: reward_pb2.SwapModelResponse = await admin(h).SwapModel(request, metadata=AUTH)
    return reply


async def score(h: Harness, model: str = "qwen") -> reward_pb2.ScoreResponse:
    request = reward_pb2.ScoreRequest(prompt=PAIR[0], response=PAIR[1], model=model)
    reply: reward_pb2.ScoreResponse = await h.stub.Score(request, metadata=AUTH)
    return reply


@pytest.fixture
async def guarded(tiny_artifact: Path, qwen_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, models={"qwen": qwen_artifact}, auth_token=TOKEN)
    async with serving(settings) as harness:
        yield harness


async def test_a_swap_needs_the_servers_token(two_models: Harness, guarded: Harness) -> None:
    request = reward_pb2.SwapModelRequest(model="qwen", artifact="/anywhere")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin(two_models).SwapModel(request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "without auth_token" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin(guarded).SwapModel(request)  # no bearer token
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_new_version_serves_and_the_old_session_is_freed(
    guarded: Harness, qwen_artifact: Path, qwen_v2_artifact: Path
) -> None:
    v1, v2 = offline_reward(qwen_artifact), offline_reward(qwen_v2_artifact)
    assert abs(v1 - v2) > 1e-3  # the versions are told apart by their rewards too
    before = await score(guarded)
    assert (before.model_version, before.reward) == ("q1", pytest.approx(v1, abs=1e-6))
    assert guarded.server.models is not None
    old_engine = weakref.ref(guarded.server.models.core("qwen").engine)
    tiny_version = (await score(guarded, "reward-model")).model_version

    done = await swap(guarded, "qwen", qwen_v2_artifact)
    assert (done.model, done.old_version, done.new_version) == ("qwen", "q1", "q2")
    after = await score(guarded)
    assert (after.model_version, after.reward) == ("q2", pytest.approx(v2, abs=1e-6))
    info = await guarded.stub.GetModelInfo(
        reward_pb2.GetModelInfoRequest(model="qwen"), metadata=AUTH
    )
    assert info.version == "q2"
    assert (await score(guarded, "reward-model")).model_version == tiny_version  # untouched
    registry = guarded.server.metrics.registry
    labels = {"name": "qwen", "provider": "CPUExecutionProvider"}
    assert registry.get_sample_value("rmserve_model_info", {**labels, "version": "q2"}) == 1
    assert registry.get_sample_value("rmserve_model_info", {**labels, "version": "q1"}) is None
    gc.collect()
    assert old_engine() is None  # nothing holds the old session
    back = await swap(guarded, "qwen", qwen_artifact)
    assert (back.old_version, back.new_version) == ("q2", "q1")
    assert (await score(guarded)).model_version == "q1"


async def test_requests_holding_the_old_version_finish_on_it(
    tiny_artifact: Path, qwen_artifact: Path, qwen_v2_artifact: Path
) -> None:
    built, factory = scripted_factory()
    settings = make_settings(qwen_artifact, auth_token=TOKEN)
    async with serving(settings, factory) as h:
        (v1_engine,) = built
        v1_engine.gate.clear()  # the next v1 batch waits in the engine
        held = asyncio.create_task(score(h))
        await eventually(lambda: v1_engine.running == 1, "a v1 batch held in the engine")
        swapping = asyncio.create_task(swap(h, "qwen", qwen_v2_artifact))
        assert h.server.models is not None
        models = h.server.models
        await eventually(lambda: models.core("qwen").model_version == "q2", "the switch")
        assert (await score(h)).model_version == "q2"  # new requests: the new version, at once
        assert not held.done() and not swapping.done()  # the old version is still draining
        v1_engine.gate.set()
        assert (await held).model_version == "q1"  # finished on the version it started on
        done = await swapping
        assert (done.old_version, done.new_version) == ("q1", "q2")
        assert [e.calls for e in built] == [1, 1]  # one batch each, nothing lost or rerun
        assert h.metric("rmserve_requests_total", method="Score", code="OK") == 2


async def test_a_swap_memory_cannot_hold_is_refused_with_the_figures(
    qwen_artifact: Path, qwen_v2_artifact: Path
) -> None:
    budget = 8 * MIB

    def settings_with(limit: int | None) -> ServerSettings:
        return make_settings(
            qwen_artifact, auth_token=TOKEN, max_inflight_bytes=budget, memory_limit_bytes=limit,
            max_queue_pairs=64, max_request_pairs=64, max_message_bytes=4 * MIB,
        )  # fmt: skip

    s = settings_with(None)
    workers = engine_workers(CPU, s.intra_op_threads, s.engine_workers)
    v1, v2 = (
        engine_footprint(
            "qwen", load_artifact(folder), CPU, workers, s.max_batch_tokens, s.long_batch_workers
        )
        for folder in (qwen_artifact, qwen_v2_artifact)
    )
    assert v1.activations > 0  # each version's activations are in the figures
    one, two = required_bytes([v1], budget, 64), required_bytes([v1, v2], budget, 64)
    limit = (one + two) // 2  # room for one version, not for both at once
    settings = settings_with(limit)
    async with serving(settings) as h:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await swap(h, "qwen", qwen_v2_artifact)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = info.value.details() or ""
        assert (
            message.startswith("memory: serving qwen q2") and f"limit of {limit} bytes" in message
        )
        assert f"{v2.activations} bytes of activations" in message
        assert (await score(h)).model_version == "q1"


async def test_a_bad_swap_leaves_the_old_version_serving(
    qwen_artifact: Path, qwen_v2_artifact: Path, tmp_path: Path
) -> None:
    def refuse_q2(name: str, artifact: LoadedArtifact, engine: Engine) -> None:
        if artifact.manifest.version == "q2":
            raise ArtifactError(f"{name} {artifact.manifest.version}: golden pairs disagree")

    tampered = tmp_path / "tampered"
    shutil.copytree(qwen_v2_artifact, tampered)
    tokenizer = tampered / "tokenizer.json"  # one word changed, the size kept
    tokenizer.write_text(tokenizer.read_text(encoding="utf-8").replace("paris", "pariz", 1))
    settings = make_settings(qwen_artifact, auth_token=TOKEN)
    async with serving(settings, model_checks=[refuse_q2]) as h:
        cases = [
            ("qwen", qwen_v2_artifact, grpc.StatusCode.FAILED_PRECONDITION,
             "artifact: qwen q2: golden pairs disagree"),
            ("qwen", tampered, grpc.StatusCode.FAILED_PRECONDITION, "artifact: "),
            ("qwen", tmp_path / "missing", grpc.StatusCode.FAILED_PRECONDITION, "artifact: "),
            ("gpt", qwen_v2_artifact, grpc.StatusCode.INVALID_ARGUMENT,
             "model: model 'gpt' is not served here; served: qwen"),
            ("qwen", "", grpc.StatusCode.INVALID_ARGUMENT, "artifact: the new version's"),
        ]  # fmt: skip
        details = []
        for model, folder, code, start in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await swap(h, model, folder)
            assert info.value.code() == code, (folder, info.value.details())
            details.append(info.value.details() or "")
            assert details[-1].startswith(start), details[-1]
            assert (await score(h)).model_version == "q1"
        assert "sha256" in details[1]  # the tampered file is named by its hash


async def test_rmserve_swap_model_calls_it_with_the_clients_token(
    guarded: Harness,
    qwen_v2_artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rmserve.cli import main

    argv = ["swap-model", "--target", f"127.0.0.1:{guarded.server.port}", "--model", "qwen",
            "--artifact", str(qwen_v2_artifact)]  # fmt: skip
    monkeypatch.delenv("RMSERVE_CLIENT_TOKEN", raising=False)
    assert await asyncio.to_thread(main, argv) == 1
    assert "rmserve swap-model: UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("RMSERVE_CLIENT_TOKEN", TOKEN)
    assert await asyncio.to_thread(main, argv) == 0
    reply = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (reply["model"], reply["old_version"], reply["new_version"]) == ("qwen", "q1", "q2")
    assert (await score(guarded)).model_version == "q2"


async def test_a_new_version_whose_golden_pairs_drift_is_refused_with_the_figures(
    guarded: Harness, tiny_artifact: Path, tmp_path: Path
) -> None:
    """The new version's golden pairs are scored on its session before the switch: a copy with
    one head weight moved (every other check passes) is refused, the old version serves on and
    keeps its canary."""
    altered = tmp_path / "altered"
    shutil.copytree(tiny_artifact, altered)
    move_a_head_weight(altered)
    before = await score(guarded, "reward-model")
    watch = guarded.server.goldens["reward-model"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await swap(guarded, "reward-model", altered)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert details.startswith(f"artifact: {altered}: golden pairs drifted on CPUExecutionProvider")
    assert "against the torch fp32 reference" in details and "where 1.0e-04 is allowed" in details
    after = await score(guarded, "reward-model")
    assert (after.model_version, after.reward) == (before.model_version, before.reward)
    assert guarded.server.goldens["reward-model"] is watch
    assert await guarded.health_status() == 1  # SERVING: a refused swap is no drift


async def test_a_swap_moves_the_models_golden_canary_to_the_new_version(
    qwen_artifact: Path, qwen_v2_artifact: Path
) -> None:
    settings = make_settings(qwen_artifact, auth_token=TOKEN, golden_interval_seconds=0.05)
    async with serving(settings) as h:
        assert h.server.models is not None
        models = h.server.models

        def checks() -> float:
            return h.metric("rmserve_golden_checks_total", model="qwen", result="ok")

        await eventually(lambda: checks() >= 2, "the load check and a canary check of q1")
        old = h.server.goldens["qwen"]
        await swap(h, "qwen", qwen_v2_artifact)
        new = h.server.goldens["qwen"]
        assert new is not old and not old.running and new.running
        assert new._core is models.core("qwen") and new._core.model_version == "q2"
        counted = checks()
        await eventually(lambda: checks() > counted, "a canary check of q2")
        assert h.metric("rmserve_golden_checks_total", model="qwen", result="drift") == 0
        assert await h.health_status() == 1
