"""The protocol-shaped pure parts of a client call, shared by the sync and asyncio clients:
checking inputs, cutting them into chunks, building requests, putting replies back in order,
and deciding whether (and when) a failed attempt is retried."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import grpc
import numpy as np

from rmserve.client.target import DEFAULT, Target, components
from rmserve.v1 import reward_pb2

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
PAIR_OVERHEAD_BYTES = 16  # tags and length prefixes of one Pair / PreferItem on the wire


@dataclass(frozen=True)
class ScoreDetails:
    """Per-pair results of ``score_detailed``, in input order."""

    rewards: np.ndarray  # float32
    truncated: np.ndarray  # bool: the pair was cut to fit max_length
    response_truncated: np.ndarray  # bool: even the response alone did not fit
    num_tokens: np.ndarray  # int32: tokens the model saw, after truncation
    model_version: str  # "" for an empty input; "a,b" if the model changed between chunks
    # With reward_weights: each model's normalised rewards (float64), by model name.
    components: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupScores:
    """``score_group``: one prompt's responses scored, with GRPO statistics (server-side)."""

    rewards: np.ndarray  # float32, in response order; each equals score_one(prompt, response)
    advantages: np.ndarray  # float64: (reward - mean) / (std + advantage_epsilon)
    mean: float
    std: float  # Bessel-corrected (ddof 1), as TRL's GRPOTrainer; 0 for a group of one
    advantage_epsilon: float
    truncated: np.ndarray  # bool
    num_tokens: np.ndarray  # int32
    model_version: str
    # With reward_weights: each model's normalised rewards (float64), by model name.
    components: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, reply: Any, count: int) -> GroupScores:
        results = reply.results
        if len(results) != count or len(reply.advantages) != count:
            raise RuntimeError(f"server returned {len(results)} results for {count} responses")
        return cls(
            rewards=np.fromiter((r.reward for r in results), np.float32, count),
            advantages=np.asarray(reply.advantages, dtype=np.float64),
            mean=float(reply.mean),
            std=float(reply.std),
            advantage_epsilon=float(reply.advantage_epsilon),
            truncated=np.fromiter((r.truncated for r in results), np.bool_, count),
            num_tokens=np.fromiter((r.num_tokens for r in results), np.int32, count),
            model_version=reply.model_version,
            components=components(results),
        )


def group_request(
    prompt: str, responses: Sequence[str], normalize: bool, target: Target = DEFAULT
) -> Any:
    """A checked ``ScoreGroupRequest`` (types checked before anything is sent)."""
    (checked,) = check_texts(responses=responses)
    check_texts(prompt=[prompt])
    if not checked:
        raise ValueError("a group needs at least one response")
    return target.apply(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=checked, normalize=normalize)
    )


@dataclass(frozen=True)
class ModelInfo:
    """The served model and the server's limits (``GetModelInfo``)."""

    name: str
    version: str
    max_length: int
    normalization_mean: float
    normalization_std: float
    provider: str
    device: str  # "cpu" or "cuda:N"
    max_batch_size: int
    max_batch_tokens: int
    max_request_pairs: int
    max_queue_pairs: int
    max_queue_delay_ms: float
    backbone: str
    pooling: str
    dtype: str
    parameters: int
    # The export's parity report (status, provider, max_abs_diff, rank_agreement, ...);
    # empty when the artifact records none.
    parity: dict[str, Any]
    engine_workers: int = 0  # batches the server's engine runs at once (0: an older server)
    model: str = ""  # the name requests use for it ("": an older server)
    is_default: bool = False  # requests that name no model are scored with it
    models: tuple[ModelInfo, ...] = ()  # every model the server serves, the default first

    @classmethod
    def from_pb(cls, message: Any) -> ModelInfo:
        own = {"parity", "models"}
        values = {f.name: getattr(message, f.name) for f in fields(cls) if f.name not in own}
        parity = message.parity
        report = {f.name: v for f, v in parity.ListFields()} if message.HasField("parity") else {}
        models = tuple(cls.from_pb(m) for m in message.models)
        return cls(**values, parity=report, models=models)


@dataclass(frozen=True)
class Chunk:
    """One request covering input entries ``[offset, offset + count)``."""

    offset: int
    count: int
    request: Any


def check_texts(**columns: Sequence[str]) -> list[list[str]]:
    """The columns as lists; raises before anything is sent if lengths or types are wrong."""
    lists = {name: list(column) for name, column in columns.items()}
    lengths = {name: len(column) for name, column in lists.items()}
    if len(set(lengths.values())) > 1:
        given = ", ".join(f"{len_} {name}" for name, len_ in lengths.items())
        raise ValueError(f"inputs must have the same length, got {given}")
    for name, column in lists.items():
        for i, text in enumerate(column):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    return list(lists.values())


def chunk_spans(sizes: Sequence[int], max_items: int, max_bytes: int) -> list[tuple[int, int]]:
    """Greedy (offset, count) spans of at most ``max_items`` entries and ``max_bytes`` bytes;
    an entry larger than ``max_bytes`` goes alone (the server then names it if it is too big)."""
    spans: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_items or used + size > max_bytes):
            spans.append((start, i - start))
            start, used = i, 0
        used += size
    if len(sizes) > start:
        spans.append((start, len(sizes) - start))
    return spans


def _sizes(*columns: list[str]) -> list[int]:
    return [
        PAIR_OVERHEAD_BYTES + sum(len(text.encode("utf-8")) for text in texts)
        for texts in zip(*columns, strict=True)
    ]


def score_chunks(
    prompts: list[str],
    responses: list[str],
    normalize: bool,
    max_items: int,
    max_bytes: int,
    target: Target = DEFAULT,
) -> list[Chunk]:
    return [
        Chunk(
            offset,
            count,
            target.apply(
                reward_pb2.ScoreBatchRequest(
                    pairs=[
                        reward_pb2.Pair(prompt=p, response=r)
                        for p, r in zip(
                            prompts[offset : offset + count],
                            responses[offset : offset + count],
                            strict=True,
                        )
                    ],
                    normalize=normalize,
                )
            ),
        )
        for offset, count in chunk_spans(_sizes(prompts, responses), max_items, max_bytes)
    ]


def prefer_chunks(
    prompts: list[str],
    a: list[str],
    b: list[str],
    max_items: int,
    max_bytes: int,
    target: Target = DEFAULT,
) -> list[Chunk]:
    return [
        Chunk(
            offset,
            count,
            target.apply(
                reward_pb2.PreferBatchRequest(
                    items=[
                        reward_pb2.PreferItem(prompt=p, response_a=x, response_b=y)
                        for p, x, y in zip(
                            prompts[offset : offset + count],
                            a[offset : offset + count],
                            b[offset : offset + count],
                            strict=True,
                        )
                    ]
                )
            ),
        )
        for offset, count in chunk_spans(_sizes(prompts, a, b), max_items, max_bytes)
    ]


def _expect(chunk: Chunk, got: int) -> None:
    if got != chunk.count:
        raise RuntimeError(
            f"server returned {got} results for {chunk.count} entries at offset {chunk.offset}"
        )


def assemble_scores(chunks: Sequence[Chunk], replies: Sequence[Any]) -> ScoreDetails:
    results = []
    for chunk, reply in zip(chunks, replies, strict=True):
        _expect(chunk, len(reply.results))
        results.extend(reply.results)
    versions = sorted({reply.model_version for reply in replies})
    return ScoreDetails(
        rewards=np.fromiter((r.reward for r in results), np.float32, len(results)),
        truncated=np.fromiter((r.truncated for r in results), np.bool_, len(results)),
        response_truncated=np.fromiter(
            (r.response_truncated for r in results), np.bool_, len(results)
        ),
        num_tokens=np.fromiter((r.num_tokens for r in results), np.int32, len(results)),
        model_version=",".join(versions),
        components=components(results),
    )


def assemble_preferences(chunks: Sequence[Chunk], replies: Sequence[Any]) -> np.ndarray:
    probabilities: list[float] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        _expect(chunk, len(reply.results))
        probabilities.extend(r.probability_a for r in reply.results)
    return np.asarray(probabilities, dtype=np.float64)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_backoff: float
    max_backoff: float

    def delay(
        self, code: Any, trailing_metadata: Any, attempt: int, rng: random.Random
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` if it must not be retried.

        ``UNAVAILABLE`` is retried with exponential backoff and jitter, and so is a ``CANCELLED``
        that came from the server (our own cancellations raise ``asyncio.CancelledError``
        instead): gRPC resets streams it never dispatched when a replica shuts down or is flooded,
        and scoring is idempotent. ``RESOURCE_EXHAUSTED`` is
        retried only with a ``grpc-retry-pushback-ms`` trailer (server overload), waiting at least
        that long; without one (e.g. a message over a size limit) or with a negative pushback
        (gRPC's "do not retry") it is not. Nothing else is retried.
        """
        if attempt >= self.max_attempts:
            return None
        backoff = min(self.max_backoff, self.initial_backoff * 2.0 ** (attempt - 1))
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return backoff * rng.uniform(0.5, 1.0)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            pushback = pushback_ms(trailing_metadata)
            if pushback is None or pushback < 0:
                return None
            return pushback / 1000.0 + backoff * rng.uniform(0.0, 0.5)
        return None


def pushback_ms(trailing_metadata: Any) -> int | None:
    for key, value in trailing_metadata or ():
        if key == RETRY_PUSHBACK_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                return int(text)
            except ValueError:
                return -1
    return None
