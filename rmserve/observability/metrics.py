"""Prometheus metrics. One registry per server instance, so several servers can share a process.

Label cardinality is bounded: ``method`` is one of the RPC names, ``code`` one of the status
code names, ``model`` one of the served models' names (fixed at start-up), and
``rmserve_model_info`` has one series per loaded model version. The unlabelled series cover the
whole server, every model together; the ``rmserve_model_*`` series split the main ones by model.
The /metrics endpoint that serves a registry is :mod:`rmserve.observability.metrics_server`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rmserve.observability.golden_metrics import GoldenMetrics
from rmserve.observability.reward_watch import DEFAULT_LENGTH_WINDOW, RewardWatch

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = tuple(float(2**i) for i in range(13))  # 1 .. 4096 pairs
TOKEN_BUCKETS = tuple(float(2**i) for i in range(4, 21))  # 16 .. 1M padded tokens
RATIO_BUCKETS = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
REWARD_BUCKETS = (
    -20.0,
    -10.0,
    -5.0,
    -3.0,
    -2.0,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
)


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        length_correlation_window: int = DEFAULT_LENGTH_WINDOW,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rmserve_requests", "Finished RPCs by method and status code.", ["method", "code"],
            registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "rmserve_request_duration_seconds", "Time from receiving an RPC to answering it.",
            ["method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_duration = Histogram(
            "rmserve_queue_duration_seconds", "Time a pair waited in the queue before its batch "
            "started.", buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokenize_duration = Histogram(
            "rmserve_tokenize_duration_seconds", "Time to tokenise one request's pairs.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "rmserve_inference_duration_seconds", "Engine time per batch (padding and forward).",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "rmserve_batch_size", "Pairs per engine batch.", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "rmserve_batch_tokens", "Padded tokens per engine batch (longest x pairs).",
            buckets=TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.padding_ratio = Histogram(
            "rmserve_padding_ratio", "Padded tokens / real tokens per engine batch.",
            buckets=RATIO_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_pairs = Gauge("rmserve_queue_pairs", "Pairs waiting in the queue.", registry=r)
        self.inflight_requests = Gauge(
            "rmserve_inflight_requests", "Reward requests accepted and not yet answered.",
            registry=r,
        )  # fmt: skip
        self.inflight_request_bytes = Gauge(
            "rmserve_inflight_request_bytes",
            "Bytes (as sent) of requests admitted and not yet answered; bounded by "
            "max_inflight_bytes.",
            registry=r,
        )
        self.pairs = Counter(
            "rmserve_pairs", "Pairs scored by the engine (a Prefer counts two).", registry=r
        )
        self.tokens = Counter(
            "rmserve_tokens", "Real (unpadded) tokens scored by the engine.", registry=r
        )
        self.truncated = Counter(
            "rmserve_truncated", "Pairs cut to fit max_length.", ["part"], registry=r
        )
        self.truncation_refused = Counter(
            "rmserve_truncation_refused",
            "Requests refused for a pair over max_length (truncation=refuse); never computed.",
            registry=r,
        )
        self.expired = Counter(
            "rmserve_expired", "Requests whose deadline passed in the queue (never computed).",
            registry=r,
        )  # fmt: skip
        self.cancelled = Counter(
            "rmserve_cancelled", "Requests cancelled by the client before being answered.",
            registry=r,
        )  # fmt: skip
        self.engine_errors = Counter(
            "rmserve_engine_errors", "Engine batches that failed.", registry=r
        )
        self.unauthenticated = Counter(
            "rmserve_unauthenticated", "Calls refused for a missing or wrong bearer token.",
            registry=r,
        )  # fmt: skip
        self.reward = Histogram(
            "rmserve_reward", "Raw rewards served (watch for reward drift during RL).",
            buckets=REWARD_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "rmserve_model_info", "The served model; always 1.", ["name", "version", "provider"],
            registry=r,
        )  # fmt: skip
        for part in ("prompt", "response"):
            self.truncated.labels(part=part)
        self.model_requests = Counter(
            "rmserve_model_requests", "Finished requests by model, method and status code (a "
            "combination of models counts once for each).", ["model", "method", "code"],
            registry=r,
        )  # fmt: skip
        self.model_pairs = Counter(
            "rmserve_model_pairs", "Pairs scored by each model (a Prefer counts two).",
            ["model"], registry=r,
        )  # fmt: skip
        self.model_reward = Histogram(
            "rmserve_model_reward", "Raw rewards served by each model (an ensemble's: its "
            "members' mean).", ["model"], buckets=REWARD_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_queue_pairs = Gauge(
            "rmserve_model_queue_pairs", "Pairs waiting in each model's queue.", ["model"],
            registry=r,
        )  # fmt: skip
        self.model_inflight_requests = Gauge(
            "rmserve_model_inflight_requests", "Requests each model accepted and has not yet "
            "answered.", ["model"], registry=r,
        )  # fmt: skip
        # rmserve_reward_length_correlation and rmserve_ensemble_std (reward hacking signs)
        self.reward_watch = RewardWatch(r, length_correlation_window)
        # rmserve_golden_* (the golden canary: rmserve.observability.golden_metrics)
        self.golden = GoldenMetrics(r)

    def observe_model(self, model: str, rewards: np.ndarray) -> None:
        """One answered request of ``model``: its rows' raw rewards."""
        self.model_pairs.labels(model=model).inc(len(rewards))
        histogram = self.model_reward.labels(model=model)
        for reward in rewards.tolist():
            histogram.observe(reward)

    def watch_models(
        self,
        models: Callable[[], list[str]],
        queue_pairs: Callable[[str], int],
        inflight: Callable[[str], int],
    ) -> None:
        """Read the queue and in-flight gauges, whole-server and per model, from the served
        models when scraped (each model's core sets the unlabelled ones for itself alone)."""
        self.queue_pairs.set_function(lambda: sum(queue_pairs(m) for m in models()))
        self.inflight_requests.set_function(lambda: sum(inflight(m) for m in models()))
        for model in models():
            self.model_queue_pairs.labels(model=model).set_function(
                lambda model=model: queue_pairs(model)  # type: ignore[misc]
            )
            self.model_inflight_requests.labels(model=model).set_function(
                lambda model=model: inflight(model)  # type: ignore[misc]
            )
