"""``RewardClient``: the blocking reward client (one gRPC channel, reused; chunks of a large
call run concurrently on a small thread pool)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from rmserve.client import plan
from rmserve.client.base import ClientBase
from rmserve.client.errors import from_rpc_error
from rmserve.client.plan import Chunk, ModelInfo, ScoreDetails
from rmserve.client.settings import ClientSettings
from rmserve.client.trl import TrlInput, to_pairs
from rmserve.v1 import reward_pb2, reward_pb2_grpc


class RewardClient(ClientBase):
    """Blocking client for ``rmserve.v1.RewardService``; safe to share between threads.

        with RewardClient("localhost:50051") as client:
            rewards = client.score(prompts, responses)

    ``target`` and keyword overrides (any ``ClientSettings`` field) take precedence over
    ``settings``, which defaults to the ``RMSERVE_CLIENT_*`` environment. ``credentials``
    (``grpc.ChannelCredentials``) replaces the TLS settings; ``interceptors`` are
    ``grpc.UnaryUnaryClientInterceptor`` objects.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: ClientSettings | None = None,
        credentials: Any = None,
        interceptors: Sequence[Any] = (),
        **overrides: Any,
    ) -> None:
        super().__init__(target, settings, credentials, overrides)
        if self._credentials is None:
            channel = grpc.insecure_channel(self.target, options=self._options)
        else:
            channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        self._channel = channel
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        self._stub = reward_pb2_grpc.RewardServiceStub(channel)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._channel.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # calls ----------------------------------------------------------------------------------

    def model_info(self, timeout: float | None = None) -> ModelInfo:
        deadline = self._deadline(timeout)
        reply = self._unary("GetModelInfo", reward_pb2.GetModelInfoRequest(), deadline, 0, 0)
        return ModelInfo.from_pb(reply)

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Rewards (float32) of ``(prompts[i], responses[i])``, in input order."""
        return self.score_detailed(prompts, responses, normalize, timeout).rewards

    def score_detailed(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
    ) -> ScoreDetails:
        """Rewards plus truncation flags, token counts and the model version."""
        p, r = plan.check_texts(prompts=prompts, responses=responses)
        deadline = self._deadline(timeout)
        chunks = plan.score_chunks(
            p, r, normalize, (self._items(deadline) if p else 1), self.settings.max_chunk_bytes
        )
        return plan.assemble_scores(chunks, self._run_chunks("ScoreBatch", chunks, deadline))

    def score_one(
        self, prompt: str, response: str, normalize: bool = False, timeout: float | None = None
    ) -> float:
        plan.check_texts(prompts=[prompt], responses=[response])
        request = reward_pb2.ScoreRequest(prompt=prompt, response=response, normalize=normalize)
        return float(self._unary("Score", request, self._deadline(timeout), 0, 1).reward)

    def prefer(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        timeout: float | None = None,
    ) -> np.ndarray:
        """P(a preferred to b) = sigmoid(r_a - r_b) per item (float64), in input order."""
        p, a, b = plan.check_texts(
            prompts=prompts, responses_a=responses_a, responses_b=responses_b
        )
        deadline = self._deadline(timeout)
        chunks = plan.prefer_chunks(
            p, a, b, (self._items(deadline) if p else 1), self.settings.max_chunk_bytes
        )
        replies = self._run_chunks("PreferBatch", chunks, deadline)
        return plan.assemble_preferences(chunks, replies)

    def prefer_one(
        self, prompt: str, response_a: str, response_b: str, timeout: float | None = None
    ) -> float:
        plan.check_texts(prompts=[prompt], responses_a=[response_a], responses_b=[response_b])
        request = reward_pb2.PreferRequest(
            prompt=prompt, response_a=response_a, response_b=response_b
        )
        reply = self._unary("Prefer", request, self._deadline(timeout), 0, 1)
        return float(reply.result.probability_a)

    def as_trl_reward_func(
        self, normalize: bool = False, timeout: float | None = None
    ) -> Callable[..., list[float]]:
        """A reward function with TRL's ``reward_funcs`` signature
        ``(prompts, completions, **kwargs) -> list[float]``, for text or conversational data."""

        def rmserve_reward(
            prompts: Sequence[TrlInput], completions: Sequence[TrlInput], **kwargs: Any
        ) -> list[float]:
            p, r = to_pairs(prompts, completions)
            return [float(x) for x in self.score(p, r, normalize, timeout)]

        return rmserve_reward

    # plumbing -------------------------------------------------------------------------------

    def _items(self, deadline: float) -> int:
        if self._max_request_pairs is None:
            with self._lock:
                if self._max_request_pairs is None:
                    request = reward_pb2.GetModelInfoRequest()
                    info = self._unary("GetModelInfo", request, deadline, 0, 0)
                    self._max_request_pairs = int(info.max_request_pairs) or None
        return self._chunk_items()

    def _unary(
        self,
        method: str,
        request: Any,
        deadline: float,
        offset: int,
        count: int,
        abort: threading.Event | None = None,
    ) -> Any:
        """One request with retries (only where a retry can succeed), within ``deadline``."""
        call = getattr(self._stub, method)
        attempt = 0
        while True:
            attempt += 1
            remaining = self._remaining(deadline, attempt - 1)
            try:
                return call(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as e:
                delay = self._retry.delay(e.code(), e.trailing_metadata(), attempt, self._rng)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise from_rpc_error(e.code(), e.details(), attempt, offset, count) from None
                if abort is not None and abort.wait(delay):
                    raise from_rpc_error(e.code(), e.details(), attempt, offset, count) from None
                if abort is None:
                    time.sleep(delay)

    def _run_chunks(self, method: str, chunks: list[Chunk], deadline: float) -> list[Any]:
        """All chunks, at most ``max_concurrent_chunks`` at once; replies in chunk order. After
        the first failure no new chunk starts and no retry is made; that failure is raised."""
        if len(chunks) <= 1:
            return [self._unary(method, c.request, deadline, c.offset, c.count) for c in chunks]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.settings.max_concurrent_chunks, thread_name_prefix="rmserve-client"
                )
            pool = self._pool
        abort = threading.Event()

        def one(chunk: Chunk) -> Any:
            if abort.is_set():
                raise _Skipped
            return self._unary(method, chunk.request, deadline, chunk.offset, chunk.count, abort)

        futures: list[Future[Any]] = [pool.submit(one, chunk) for chunk in chunks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            abort.set()
            for future in futures:
                future.cancel()
            wait(futures)
        for future in futures:  # the first real failure in input order, if any
            error = None if future.cancelled() else future.exception()
            if error is not None and not isinstance(error, _Skipped):
                raise error
        return [future.result() for future in futures]


class _Skipped(Exception):
    """A chunk not started because another chunk of the same call had failed."""
