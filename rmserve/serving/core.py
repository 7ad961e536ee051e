"""The serving core: tokenise → queue → batch → infer, with a lifecycle. Knows no protocol.

    async with RewardCore(engine, artifact, config, metrics) as core:
        scores = await core.score([("prompt", "response")], timeout=1.0)

Admission happens before anything is queued: a request over ``max_request_pairs`` is
``InvalidRequest``, a full queue is ``Overloaded``, a core that is not serving (warming up,
draining, stopped) is ``Unavailable``. Protocol adapters first hold the request's bytes with
``admit_bytes`` (``Overloaded`` over ``max_inflight_bytes``) before they parse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType

import numpy as np

from rmserve.batching.batcher import Batcher
from rmserve.batching.collect import QueuedItem
from rmserve.batching.pending import PairScore, PendingRequest, Preference
from rmserve.batching.warmup import warm_up, warmup_batches_for
from rmserve.engine.providers import CUDA
from rmserve.engine.session import Engine, LoadedArtifact
from rmserve.errors import DeadlineExpired, InvalidRequest, Unavailable
from rmserve.observability.metrics import Metrics
from rmserve.observability.reward_watch import response_lengths
from rmserve.rewards.ensemble import AggregateName
from rmserve.serving import tokenizing
from rmserve.serving.admission import SharedAdmission
from rmserve.serving.config import CoreConfig, CoreState
from rmserve.serving.inflight import InFlight
from rmserve.serving.memory_budget import BytesReservation
from rmserve.serving.replies import (
    RewardOptions,
    ServedScore,
    preferences,
    resolve_options,
    served_scores,
    watched_rewards,
)
from rmserve.text.preprocess import PreparedPair
from rmserve.text.windows import UncuttableText

log = logging.getLogger(__name__)


class RewardCore:
    """One model's core. ``shared``: what it shares with the server's other models (admission by
    bytes, tokenizer threads; ``rmserve.serving.admission``), else its own, from ``config``.
    ``name``: the name requests call it by (default: its manifest's name); ``watch_rewards``:
    whether its rewards feed the server's reward watch (one model's, or the signals mix)."""

    def __init__(
        self,
        engine: Engine,
        artifact: LoadedArtifact,
        config: CoreConfig,
        metrics: Metrics,
        shared: SharedAdmission | None = None,
        name: str | None = None,
        watch_rewards: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: what the warm-up budget is measured on (a test passes a fake one)."""
        self.engine = engine
        self._clock = clock
        self.artifact = artifact
        self.config = config
        self.metrics = metrics
        self.name = name or artifact.manifest.name
        self.state = CoreState.NEW
        self._executor = ThreadPoolExecutor(
            max_workers=config.engine_workers, thread_name_prefix="rmserve-engine"
        )
        self._owns_shared = shared is None
        self.shared = shared or SharedAdmission(config.max_inflight_bytes, metrics)
        self._watch_rewards = watch_rewards
        self._batcher: Batcher | None = None
        self._batcher_task: asyncio.Task[None] | None = None
        self._requests = InFlight(metrics.inflight_requests.set)

    @property
    def inflight(self) -> int:
        """Requests accepted and not yet answered."""
        return self._requests.count

    @contextlib.contextmanager
    def admit_bytes(self, size: int) -> Iterator[None]:
        """Hold ``size`` request bytes of the memory budget for a block, or raise
        ``Overloaded``: protocol adapters wrap a request in it before parsing it."""
        with self.shared.admit_bytes(size, self.retry_after_ms):
            yield

    @contextlib.contextmanager
    def reserve_bytes(self) -> Iterator[BytesReservation]:
        """``admit_bytes`` for a request whose bytes are charged as they arrive (an HTTP body
        read in chunks): ``grow`` the reservation per chunk; it is released when the block
        ends, however it ends."""
        with self.shared.reserve_bytes(self.retry_after_ms) as reservation:
            yield reservation

    def retry_after_ms(self) -> int:
        """The retry hint of an overloaded request: how long this model's queue takes to drain."""
        return self._batcher.retry_after_ms() if self._batcher is not None else 1000

    @property
    def pending_rows(self) -> int:
        """Pairs queued or being tokenised for the queue."""
        return self._batcher.pending_rows if self._batcher is not None else 0

    @property
    def model_version(self) -> str:
        return self.artifact.manifest.version

    # lifecycle -----------------------------------------------------------------------------

    async def astart(self) -> None:
        """Warm the engine up, then start the batcher and accept requests."""
        if self.state is not CoreState.NEW:
            raise RuntimeError(f"RewardCore.astart() called when {self.state.value}")
        self.state = CoreState.WARMING
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._warm_up)
        self._requests.start()
        self._batcher = Batcher(
            self.engine,
            self._executor,
            self.config.limits,
            self.config.max_queue_pairs,
            self.metrics,
            self.config.engine_workers,
            self.config.long_batch_workers,
        )
        self._batcher_task = asyncio.create_task(self._batcher.run(), name="rmserve-batcher")
        if self._owns_shared:
            self.shared.start()
        self.state = CoreState.SERVING
        log.info("serving %s %s", self.artifact.manifest.name, self.model_version)

    def begin_drain(self) -> None:
        """Refuse new requests; accepted ones keep running."""
        if self.state in (CoreState.NEW, CoreState.WARMING, CoreState.SERVING):
            self.state = CoreState.DRAINING

    async def astop(self, grace_seconds: float = 0.0) -> None:
        """Drain: wait up to ``grace_seconds`` for accepted work, fail what is left, stop."""
        self.begin_drain()
        if self._requests.started and self._requests.count:
            try:
                await asyncio.wait_for(self._requests.idle(), timeout=grace_seconds)
            except TimeoutError:
                log.warning(
                    "%d requests still running after %.1fs grace", self.inflight, grace_seconds
                )
        if self._batcher is not None:
            self._batcher.fail_all("server stopped before this request was computed")
        if self._batcher_task is not None:
            self._batcher_task.cancel()
            await asyncio.gather(self._batcher_task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_shared:
            await self.shared.aclose()
        self.state = CoreState.STOPPED

    async def __aenter__(self) -> RewardCore:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def _warm_up(self) -> None:
        """The warm-up runs, shortest shapes first, within the budget
        (``rmserve.batching.warmup``)."""
        runs = self.config.warmup_runs
        if runs == 0:
            return
        preprocessor, limits = self.artifact.preprocessor, self.config.limits
        batches = warmup_batches_for(preprocessor, limits, self.engine.provider == CUDA)
        budget = self.config.warmup_budget_s
        report = warm_up(self.engine.score, batches, runs, budget, self._clock)
        log.info(
            "warm-up done in %.1fs: %d runs of %d shapes (rows x padded length) up to %s",
            report.seconds, runs, len(report.ran), "x".join(map(str, report.ran[-1])),
        )  # fmt: skip
        if report.skipped:
            log.warning(
                "warm-up budget of %.0fs (warmup_budget_seconds) spent: skipped %d longer "
                "shapes, whose first request pays their first run: %s",
                budget, len(report.skipped), ", ".join(f"{r}x{n}" for r, n in report.skipped),
            )  # fmt: skip

    # low-priority work ---------------------------------------------------------------------

    async def score_when_idle(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        """Score ``pairs`` on an engine thread once no request is in flight (the golden canary,
        ``rmserve.serving.golden_canary``): a request arriving meanwhile waits for this one run
        at most. ``Unavailable`` once the core is not serving."""
        while True:
            if self.state is not CoreState.SERVING or not self._requests.started:
                raise Unavailable(f"server is {self.state.value}")
            if self._requests.count == 0:
                break
            await self._requests.idle()
        loop = asyncio.get_running_loop()
        rewards: np.ndarray = await loop.run_in_executor(self._executor, self.engine.score, pairs)
        return rewards

    def mark_drifted(self) -> None:
        """Refuse every new request from now on (``Unavailable``): the model no longer scores
        its golden pairs as it should. Accepted requests finish."""
        if self.state is CoreState.SERVING:
            self.state = CoreState.DRIFTED

    # requests ------------------------------------------------------------------------------

    async def score(
        self, pairs: Sequence[tuple[str, str]], timeout: float | None = None, field: str = "pairs"
    ) -> list[PairScore]:
        """Raw rewards of (prompt, response) pairs, in order. ``timeout`` in seconds. ``field``
        names the pairs in errors (``pairs[3].response``); empty for a request whose own fields
        are one pair's ``prompt`` and ``response``."""
        prompts = [prompt for prompt, _ in pairs]
        responses = [response for _, response in pairs]
        prepare = partial(self.artifact.preprocessor.iter_many, prompts, responses)
        chars = tokenizing.text_chars(prompts) + tokenizing.text_chars(responses)
        request = await self._run(len(pairs), 1, prepare, chars, responses, timeout, field)
        return request.scores()

    async def score_group(
        self,
        prompt: str,
        responses: Sequence[str],
        timeout: float | None = None,
        field: str = "responses",
    ) -> list[PairScore]:
        """Raw rewards of (prompt, response) for each response, in order: each equals
        ``score([(prompt, response)])``, with the prompt tokenised once for the group."""
        texts = list(responses)
        prepare = partial(self.artifact.preprocessor.iter_group, prompt, texts)
        chars = len(prompt) + tokenizing.text_chars(texts)
        request = await self._run(len(texts), 1, prepare, chars, texts, timeout, field, group=True)
        return request.scores()

    async def prefer(
        self,
        items: Sequence[tuple[str, str, str]],
        timeout: float | None = None,
        field: str = "items",
    ) -> list[Preference]:
        """P(a preferred to b) for (prompt, response_a, response_b) items; a and b share a batch."""
        prompts = [prompt for prompt, _, _ in items for _ in range(2)]
        responses = [text for _, a, b in items for text in (a, b)]
        prepare = partial(self.artifact.preprocessor.iter_many, prompts, responses)
        chars = tokenizing.text_chars(prompt for prompt, _, _ in items) + tokenizing.text_chars(
            responses
        )
        scores = (
            await self._run(len(items), 2, prepare, chars, responses, timeout, field)
        ).scores()
        return preferences(scores)

    def served(self, scores: Sequence[PairScore], options: RewardOptions) -> list[ServedScore]:
        """The replies' rewards (and an ensemble's per-pair spread) for scored pairs: the one
        place every protocol turns engine scores into served rewards."""
        return served_scores(self.artifact.manifest, scores, options)

    def reward_options(
        self,
        normalize: bool,
        aggregate: AggregateName | None = None,
        uncertainty_penalty: float | None = None,
        return_members: bool = False,
    ) -> RewardOptions:
        """A request's choices, the server's defaults where it left them unset (validated:
        ``InvalidRequest`` naming the field). See ``rmserve.serving.replies``."""
        return resolve_options(
            self.artifact.manifest,
            normalize,
            aggregate or self.config.ensemble_aggregate,
            self.config.ensemble_uncertainty_penalty
            if uncertainty_penalty is None
            else uncertainty_penalty,
            return_members,
        )

    async def _run(
        self,
        items: int,
        rows_per_item: int,
        prepare: tokenizing.Chunks,
        chars: int,
        responses: Sequence[str],
        timeout: float | None,
        field: str,
        group: bool = False,
    ) -> PendingRequest:
        """Admit ``items`` entries of ``rows_per_item`` rows, tokenise them with ``prepare`` (its
        chunks; ``chars`` characters of text in all), queue them and wait for their rewards.
        ``responses``: the rows' response texts, for the reward watch. ``group``: one prompt
        for all rows (the uncuttable-text errors then name ``prompt`` or ``{field}[i]``)."""
        batcher = self._serving_batcher()
        rows = items * rows_per_item
        if items > self.config.max_request_pairs:
            raise InvalidRequest(
                f"{field}: {items} entries is over max_request_pairs="
                f"{self.config.max_request_pairs}; split the request"
            )
        deadline = None if timeout is None else batcher.clock() + timeout
        batcher.reserve(rows)
        reserved = rows
        self._requests.enter()
        request: PendingRequest | None = None
        try:
            try:
                prepared = await self._tokenize(chars, prepare, deadline, batcher)
            except DeadlineExpired:
                self.metrics.expired.inc()
                raise
            except UncuttableText as e:
                message = (
                    tokenizing.uncuttable_group_message(e, field)
                    if group
                    else tokenizing.uncuttable_message(e, field, rows_per_item)
                )
                raise InvalidRequest(message) from None
            if len(prepared) != rows:
                raise AssertionError(f"tokenising {rows} rows returned {len(prepared)}")
            if self.config.truncation == "refuse":
                self._refuse_truncated(prepared, field, rows_per_item, group)
            request = PendingRequest(prepared, deadline)
            if not prepared:
                return request
            now = batcher.clock()
            batcher.enqueue(
                request,
                [
                    QueuedItem(request, i, tuple(prepared[i : i + rows_per_item]), now, deadline)
                    for i in range(0, len(prepared), rows_per_item)
                ],
            )
            reserved = 0
            await request.future
            if request.rewards is not None:
                raw, spread = watched_rewards(self.artifact.manifest, request.rewards)
                if self._watch_rewards:
                    self.metrics.reward_watch.observe(response_lengths(responses), raw, spread)
                self.metrics.observe_model(self.name, raw)
            return request
        except asyncio.CancelledError:
            # Counted here unless the batcher answered first (then the future is not the one
            # cancelled). The transport's deadline timer and the batcher's race at the deadline;
            # a cancellation before it is the client's (its own deadline fires a moment earlier).
            if request is None or request.future.cancelled():  # None: cancelled while tokenising
                if request is not None:
                    batcher.withdraw(request)
                expired = deadline is not None and batcher.clock() >= deadline
                (self.metrics.expired if expired else self.metrics.cancelled).inc()
            raise
        finally:
            if reserved:
                batcher.release(reserved)
            self._requests.leave()

    def _refuse_truncated(
        self, prepared: list[PreparedPair], field: str, rows_per_item: int, group: bool
    ) -> None:
        """Truncation 'refuse': ``InvalidRequest`` naming the first pair over max_length."""
        row = tokenizing.first_truncated(prepared)
        if row is None:
            return
        self.metrics.truncation_refused.inc()
        max_length = self.artifact.preprocessor.config.max_length
        raise InvalidRequest(
            tokenizing.refused_message(prepared[row], row, field, rows_per_item, max_length, group)
        )

    async def _tokenize(
        self, chars: int, prepare: tokenizing.Chunks, deadline: float | None, batcher: Batcher
    ) -> list[PreparedPair]:
        """``tokenizing.tokenize`` on the shared tokenizer threads, timed."""
        start = time.perf_counter()
        prepared = await tokenizing.tokenize(
            chars, prepare, deadline, batcher.clock, self.shared.tokenizers
        )
        self.metrics.tokenize_duration.observe(time.perf_counter() - start)
        return prepared

    def _serving_batcher(self) -> Batcher:
        if self.state is not CoreState.SERVING or self._batcher is None:
            raise Unavailable(f"server is {self.state.value}; retry on another replica or later")
        return self._batcher
