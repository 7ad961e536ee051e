"""``AsyncRewardClient``: the asyncio reward client (one ``grpc.aio`` channel, reused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
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


class AsyncRewardClient(ClientBase):
    """Asyncio client for ``rmserve.v1.RewardService``.

        async with AsyncRewardClient("localhost:50051") as client:
            rewards = await client.score(prompts, responses)

    ``target`` and keyword overrides (any ``ClientSettings`` field) take precedence over
    ``settings``, which defaults to the ``RMSERVE_CLIENT_*`` environment. ``credentials``
    (``grpc.ChannelCredentials``) replaces the TLS settings; ``interceptors`` are
    ``grpc.aio`` client interceptors. Create and use it inside one event loop.
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
        self._interceptors = list(interceptors)
        self._channel: Any = None
        self._stub: Any = None
        self._limits_lock: asyncio.Lock | None = None
        self._inflight: asyncio.Semaphore | None = None

    # lifecycle ------------------------------------------------------------------------------

    def _get_stub(self) -> Any:
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(
                    self.target, options=self._options, interceptors=self._interceptors
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target,
                    self._credentials,
                    options=self._options,
                    interceptors=self._interceptors,
                )
            self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # calls ----------------------------------------------------------------------------------

    async def model_info(self, timeout: float | None = None) -> ModelInfo:
        deadline = self._deadline(timeout)
        reply = await self._unary("GetModelInfo", reward_pb2.GetModelInfoRequest(), deadline, 0, 0)
        return ModelInfo.from_pb(reply)

    async def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Rewards (float32) of ``(prompts[i], responses[i])``, in input order."""
        return (await self.score_detailed(prompts, responses, normalize, timeout)).rewards

    async def score_detailed(
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
            p,
            r,
            normalize,
            (await self._items(deadline) if p else 1),
            self.settings.max_chunk_bytes,
        )
        replies = await self._run_chunks("ScoreBatch", chunks, deadline)
        return plan.assemble_scores(chunks, replies)

    async def score_one(
        self, prompt: str, response: str, normalize: bool = False, timeout: float | None = None
    ) -> float:
        plan.check_texts(prompts=[prompt], responses=[response])
        request = reward_pb2.ScoreRequest(prompt=prompt, response=response, normalize=normalize)
        reply = await self._unary("Score", request, self._deadline(timeout), 0, 1)
        return float(reply.reward)

    async def prefer(
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
            p, a, b, (await self._items(deadline) if p else 1), self.settings.max_chunk_bytes
        )
        replies = await self._run_chunks("PreferBatch", chunks, deadline)
        return plan.assemble_preferences(chunks, replies)

    async def prefer_one(
        self, prompt: str, response_a: str, response_b: str, timeout: float | None = None
    ) -> float:
        plan.check_texts(prompts=[prompt], responses_a=[response_a], responses_b=[response_b])
        request = reward_pb2.PreferRequest(
            prompt=prompt, response_a=response_a, response_b=response_b
        )
        reply = await self._unary("Prefer", request, self._deadline(timeout), 0, 1)
        return float(reply.result.probability_a)

    def as_trl_reward_func(
        self, normalize: bool = False, timeout: float | None = None
    ) -> Callable[..., Awaitable[list[float]]]:
        """An async reward function with TRL's ``reward_funcs`` signature
        ``(prompts, completions, **kwargs) -> list[float]``, for text or conversational data."""

        async def rmserve_reward(
            prompts: Sequence[TrlInput], completions: Sequence[TrlInput], **kwargs: Any
        ) -> list[float]:
            p, r = to_pairs(prompts, completions)
            return [float(x) for x in await self.score(p, r, normalize, timeout)]

        return rmserve_reward

    # plumbing -------------------------------------------------------------------------------

    async def _items(self, deadline: float) -> int:
        if self._max_request_pairs is None:
            self._limits_lock = self._limits_lock or asyncio.Lock()
            async with self._limits_lock:
                if self._max_request_pairs is None:
                    request = reward_pb2.GetModelInfoRequest()
                    info = await self._unary("GetModelInfo", request, deadline, 0, 0)
                    self._max_request_pairs = int(info.max_request_pairs) or None
        return self._chunk_items()

    async def _unary(
        self, method: str, request: Any, deadline: float, offset: int, count: int
    ) -> Any:
        """One request with retries (only where a retry can succeed), within ``deadline``."""
        call = getattr(self._get_stub(), method)
        if self._inflight is None:
            self._inflight = asyncio.Semaphore(self.settings.max_inflight_requests)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._inflight:
                    remaining = self._remaining(deadline, attempt - 1)
                    return await call(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as e:
                delay = self._retry.delay(e.code(), e.trailing_metadata(), attempt, self._rng)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise from_rpc_error(e.code(), e.details(), attempt, offset, count) from None
                await asyncio.sleep(delay)

    async def _run_chunks(self, method: str, chunks: list[Chunk], deadline: float) -> list[Any]:
        """All chunks, at most ``max_concurrent_chunks`` at once; replies in chunk order. The
        first failure cancels the chunks still running and is raised."""
        if len(chunks) <= 1:
            return [
                await self._unary(method, c.request, deadline, c.offset, c.count) for c in chunks
            ]
        gate = asyncio.Semaphore(self.settings.max_concurrent_chunks)

        async def one(chunk: Chunk) -> Any:
            async with gate:
                return await self._unary(method, chunk.request, deadline, chunk.offset, chunk.count)

        tasks = [asyncio.ensure_future(one(chunk)) for chunk in chunks]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:  # the first failure in input order, if any
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return [task.result() for task in tasks]
