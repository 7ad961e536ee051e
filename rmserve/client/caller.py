"""The one implementation of a reward call, behind both client faces: input checks, chunking,
concurrent chunks reassembled in order, deadlines, retries with backoff and error mapping.

It is asyncio code over a :class:`~rmserve.client.transport.Transport`; ``AsyncRewardClient``
is this class with a ``grpc.aio`` transport, and ``RewardClient`` runs it on a private event
loop with a blocking-channel transport.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from rmserve.client import plan
from rmserve.client.channel import call_metadata
from rmserve.client.errors import DeadlineExceededError, from_rpc_error
from rmserve.client.plan import Chunk, GroupScores, ModelInfo, RetryPolicy, ScoreDetails
from rmserve.client.settings import ClientSettings
from rmserve.client.target import Target
from rmserve.client.transport import Transport
from rmserve.v1 import reward_pb2


def build_settings(
    target: str | None, settings: ClientSettings | None, overrides: dict[str, Any]
) -> ClientSettings:
    """``settings`` (default: the ``RMSERVE_CLIENT_*`` environment) with ``overrides`` and
    ``target`` on top."""
    values: dict[str, Any] = settings.model_dump(exclude_unset=True) if settings else {}
    values.update(overrides)
    if target is not None:
        values["target"] = target
    return ClientSettings(**values)


class Caller:
    """Asyncio calls to ``rmserve.v1.RewardService`` through ``transport``; use it inside one
    event loop."""

    def __init__(self, settings: ClientSettings, transport: Transport) -> None:
        self.settings = s = settings
        self._transport = transport
        self._metadata = call_metadata(s)
        self._retry = RetryPolicy(s.max_attempts, s.initial_backoff, s.max_backoff)
        self._rng = random.Random()
        self._max_request_pairs: int | None = None  # the server's, from GetModelInfo
        self._limits_lock: asyncio.Lock | None = None
        self._inflight: asyncio.Semaphore | None = None

    @property
    def target(self) -> str:
        """The gRPC target URI the client calls."""
        return self._transport.target

    async def close(self) -> None:
        await self._transport.close()

    # calls ----------------------------------------------------------------------------------

    async def model_info(
        self, timeout: float | None = None, *, model: str | None = None
    ) -> ModelInfo:
        """The named model (None: the server's default) and, in ``models``, every served one."""
        request = Target(model).apply(reward_pb2.GetModelInfoRequest())
        return ModelInfo.from_pb(
            await self._unary("GetModelInfo", request, self._deadline(timeout), 0, 0)
        )

    async def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Rewards (float32) of ``(prompts[i], responses[i])``, in input order. ``model``: a
        served model's name (None: the server's default); ``reward_weights``: a weighted
        combination of served models instead, each normalised by its own stats."""
        details = await self.score_detailed(
            prompts, responses, normalize, timeout, model=model, reward_weights=reward_weights
        )
        return details.rewards

    async def score_detailed(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> ScoreDetails:
        """Rewards plus truncation flags, token counts, the model version and, with
        ``reward_weights``, each model's normalised rewards (``components``)."""
        target = Target(model, reward_weights)
        p, r = plan.check_texts(prompts=prompts, responses=responses)
        deadline = self._deadline(timeout)
        items = await self._items(deadline) if p else 1
        max_bytes = self.settings.max_chunk_bytes
        chunks = plan.score_chunks(p, r, normalize, items, max_bytes, target)
        return plan.assemble_scores(chunks, await self._run_chunks("ScoreBatch", chunks, deadline))

    async def score_one(
        self,
        prompt: str,
        response: str,
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> float:
        target = Target(model, reward_weights)
        plan.check_texts(prompts=[prompt], responses=[response])
        request = target.apply(
            reward_pb2.ScoreRequest(prompt=prompt, response=response, normalize=normalize)
        )
        return float((await self._unary("Score", request, self._deadline(timeout), 0, 1)).reward)

    async def score_group(
        self,
        prompt: str,
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> GroupScores:
        """One GRPO group in one ``ScoreGroup`` call (never chunked: the statistics span the
        group, so it must fit the server's ``max_request_pairs``)."""
        target = Target(model, reward_weights)
        request = plan.group_request(prompt, responses, normalize, target)
        count = len(request.responses)
        reply = await self._unary("ScoreGroup", request, self._deadline(timeout), 0, count)
        return GroupScores.from_pb(reply, count)

    async def score_groups(
        self,
        groups: Sequence[tuple[str, Sequence[str]]],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> list[GroupScores]:
        """``score_group`` of every ``(prompt, responses)``, at most ``max_concurrent_chunks``
        at once, within one deadline; results in input order."""
        target = Target(model, reward_weights)
        requests = [plan.group_request(p, r, normalize, target) for p, r in groups]
        deadline = self._deadline(timeout)
        gate = asyncio.Semaphore(self.settings.max_concurrent_chunks)
        offsets = [0]
        for request in requests:
            offsets.append(offsets[-1] + len(request.responses))

        async def one(i: int) -> GroupScores:
            count = len(requests[i].responses)
            async with gate:
                reply = await self._unary("ScoreGroup", requests[i], deadline, offsets[i], count)
            return GroupScores.from_pb(reply, count)

        return list(await asyncio.gather(*(one(i) for i in range(len(requests)))))

    async def prefer(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """P(a preferred to b) = sigmoid(r_a - r_b) per item (float64), in input order (with
        ``reward_weights``: of the composite rewards)."""
        target = Target(model, reward_weights)
        p, a, b = plan.check_texts(
            prompts=prompts, responses_a=responses_a, responses_b=responses_b
        )
        deadline = self._deadline(timeout)
        items = await self._items(deadline) if p else 1
        chunks = plan.prefer_chunks(p, a, b, items, self.settings.max_chunk_bytes, target)
        replies = await self._run_chunks("PreferBatch", chunks, deadline)
        return plan.assemble_preferences(chunks, replies)

    async def prefer_one(
        self,
        prompt: str,
        response_a: str,
        response_b: str,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> float:
        target = Target(model, reward_weights)
        plan.check_texts(prompts=[prompt], responses_a=[response_a], responses_b=[response_b])
        request = target.apply(
            reward_pb2.PreferRequest(prompt=prompt, response_a=response_a, response_b=response_b)
        )
        reply = await self._unary("Prefer", request, self._deadline(timeout), 0, 1)
        return float(reply.result.probability_a)

    async def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """One raw ``RewardService`` RPC (``call("Score", reward_pb2.ScoreRequest(...))``) with
        this client's channel, token, deadline, retries and errors, but no chunking: for tools
        that need a particular RPC shape (``rmserve score``, ``rmserve loadtest``)."""
        entries = getattr(request, "pairs", None) or getattr(request, "items", None)
        count = len(entries or (None,))
        return await self._unary(method, request, self._deadline(timeout), 0, count)

    # plumbing -------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        seconds = self.settings.timeout if timeout is None else timeout
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        return time.monotonic() + seconds

    @staticmethod
    def _remaining(deadline: float, attempts: int) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(
                f"DEADLINE_EXCEEDED: deadline passed after {attempts} attempts",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "deadline passed before the request could be (re)sent",
                attempts,
            )
        return remaining

    async def _items(self, deadline: float) -> int:
        """Pairs per chunk: ours, lowered to the server's ``max_request_pairs`` (asked once)."""
        if self._max_request_pairs is None:
            self._limits_lock = self._limits_lock or asyncio.Lock()
            async with self._limits_lock:
                if self._max_request_pairs is None:
                    request = reward_pb2.GetModelInfoRequest()
                    info = await self._unary("GetModelInfo", request, deadline, 0, 0)
                    self._max_request_pairs = int(info.max_request_pairs) or None
        server = self._max_request_pairs or self.settings.max_chunk_pairs
        return max(1, min(server, self.settings.max_chunk_pairs))

    async def _unary(
        self, method: str, request: Any, deadline: float, offset: int, count: int
    ) -> Any:
        """One request with retries (only where a retry can succeed) within ``deadline`` (a
        ``time.monotonic()`` instant). A failure is raised as the client exception for input
        entries ``[offset, offset + count)``."""
        if self._inflight is None:
            self._inflight = asyncio.Semaphore(self.settings.max_inflight_requests)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._inflight:
                    remaining = self._remaining(deadline, attempt - 1)
                    return await self._transport.call(method, request, remaining, self._metadata)
            except grpc.RpcError as e:
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
