"""``AsyncRewardClient``: the asyncio reward client (one ``grpc.aio`` channel, reused)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from rmserve.client.caller import Caller, build_settings
from rmserve.client.settings import ClientSettings
from rmserve.client.target import Target
from rmserve.client.transport import AioTransport
from rmserve.client.trl import TrlInput, consecutive_groups, has_repeats, to_pairs


class AsyncRewardClient(Caller):
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
        built = build_settings(target, settings, overrides)
        super().__init__(built, AioTransport(built, credentials, interceptors))

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def as_trl_reward_func(
        self,
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> Callable[..., Awaitable[list[float]]]:
        """An async reward function with TRL's ``reward_funcs`` signature
        ``(prompts, completions, **kwargs) -> list[float]``, for text or conversational data.
        ``model`` / ``reward_weights``: which served model(s) score, as in ``score``."""
        Target(model, reward_weights)  # a bad choice fails here, not at the first step

        async def rmserve_reward(
            prompts: Sequence[TrlInput], completions: Sequence[TrlInput], **kwargs: Any
        ) -> list[float]:
            p, r = to_pairs(prompts, completions)
            runs = consecutive_groups(p)
            if not has_repeats(runs, len(p)):
                return [
                    float(x)
                    for x in await self.score(
                        p, r, normalize, timeout, model=model, reward_weights=reward_weights
                    )
                ]
            groups = [(p[start], r[start:end]) for start, end in runs]
            results = await self.score_groups(
                groups, normalize, timeout, model=model, reward_weights=reward_weights
            )
            return [float(x) for result in results for x in result.rewards]

        return rmserve_reward
