"""``RewardClient``: the blocking face of the one client implementation.

Each call runs ``rmserve.client.caller.Caller`` on a private event loop in a background thread
(:class:`~rmserve.client.loop_thread.LoopThread`) over a blocking ``grpc`` channel, so chunking,
retries, deadlines and errors behave exactly as in ``AsyncRewardClient``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from rmserve.client.caller import Caller, build_settings
from rmserve.client.loop_thread import LoopThread
from rmserve.client.plan import GroupScores, ModelInfo, ScoreDetails
from rmserve.client.settings import ClientSettings
from rmserve.client.target import Target
from rmserve.client.transport import FutureTransport
from rmserve.client.trl import TrlInput, consecutive_groups, has_repeats, to_pairs


class RewardClient:
    """Blocking client for ``rmserve.v1.RewardService``; safe to share between threads.

        with RewardClient("localhost:50051") as client:
            rewards = client.score(prompts, responses)

    ``target`` and keyword overrides (any ``ClientSettings`` field) take precedence over
    ``settings``, which defaults to the ``RMSERVE_CLIENT_*`` environment. ``credentials``
    (``grpc.ChannelCredentials``) replaces the TLS settings; ``interceptors`` are
    ``grpc.UnaryUnaryClientInterceptor`` objects. Methods and arguments are those of
    ``AsyncRewardClient``, blocking.
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
        self.settings = build_settings(target, settings, overrides)
        self._caller = Caller(
            self.settings, FutureTransport(self.settings, credentials, interceptors)
        )
        self.target = self._caller.target
        self._loop = LoopThread("rmserve-client")

    def close(self) -> None:
        """Close the channel and stop the client's thread (calls still running are cancelled)."""
        if not self._loop.closed:
            self._loop.run(self._caller.close())
            self._loop.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def model_info(self, timeout: float | None = None, *, model: str | None = None) -> ModelInfo:
        return self._loop.run(self._caller.model_info(timeout, model=model))

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Rewards (float32) of ``(prompts[i], responses[i])``, in input order."""
        return self.score_detailed(
            prompts, responses, normalize, timeout, model=model, reward_weights=reward_weights
        ).rewards

    def score_detailed(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> ScoreDetails:
        """Rewards plus truncation flags, token counts and the model version."""
        return self._loop.run(
            self._caller.score_detailed(
                prompts, responses, normalize, timeout, model=model, reward_weights=reward_weights
            )
        )

    def score_one(
        self,
        prompt: str,
        response: str,
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> float:
        return self._loop.run(
            self._caller.score_one(
                prompt, response, normalize, timeout, model=model, reward_weights=reward_weights
            )
        )

    def score_group(
        self,
        prompt: str,
        responses: Sequence[str],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> GroupScores:
        """One GRPO group: rewards, mean, std (ddof 1) and advantages, in one ``ScoreGroup``."""
        return self._loop.run(
            self._caller.score_group(
                prompt, responses, normalize, timeout, model=model, reward_weights=reward_weights
            )
        )

    def score_groups(
        self,
        groups: Sequence[tuple[str, Sequence[str]]],
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> list[GroupScores]:
        """``score_group`` of every ``(prompt, responses)``, concurrently; in input order."""
        return self._loop.run(
            self._caller.score_groups(
                groups, normalize, timeout, model=model, reward_weights=reward_weights
            )
        )

    def prefer(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """P(a preferred to b) = sigmoid(r_a - r_b) per item (float64), in input order."""
        return self._loop.run(
            self._caller.prefer(
                prompts,
                responses_a,
                responses_b,
                timeout,
                model=model,
                reward_weights=reward_weights,
            )
        )

    def prefer_one(
        self,
        prompt: str,
        response_a: str,
        response_b: str,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> float:
        return self._loop.run(
            self._caller.prefer_one(
                prompt, response_a, response_b, timeout, model=model, reward_weights=reward_weights
            )
        )

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """One raw ``RewardService`` RPC; see ``AsyncRewardClient.call``."""
        return self._loop.run(self._caller.call(method, request, timeout))

    def as_trl_reward_func(
        self,
        normalize: bool = False,
        timeout: float | None = None,
        *,
        model: str | None = None,
        reward_weights: Mapping[str, float] | None = None,
    ) -> Callable[..., list[float]]:
        """A reward function with TRL's ``reward_funcs`` signature
        ``(prompts, completions, **kwargs) -> list[float]``, for text or conversational data.
        ``model`` / ``reward_weights``: which served model(s) score, as in ``score``."""
        Target(model, reward_weights)  # a bad choice fails here, not at the first step

        def rmserve_reward(
            prompts: Sequence[TrlInput], completions: Sequence[TrlInput], **kwargs: Any
        ) -> list[float]:
            p, r = to_pairs(prompts, completions)
            runs = consecutive_groups(p)
            if not has_repeats(runs, len(p)):
                return [
                    float(x)
                    for x in self.score(
                        p, r, normalize, timeout, model=model, reward_weights=reward_weights
                    )
                ]
            groups = [(p[start], r[start:end]) for start, end in runs]
            results = self.score_groups(
                groups, normalize, timeout, model=model, reward_weights=reward_weights
            )
            return [float(x) for result in results for x in result.rewards]

        return rmserve_reward
