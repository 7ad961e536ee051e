"""The request wrapper both protocol adapters share: what it counts, keeps, logs, lets through."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rmserve.errors import Overloaded, RewardError, Unavailable
from rmserve.observability.metrics import Metrics
from rmserve.serving.request_scope import RequestScopes


def label(error: RewardError) -> str:
    return {Overloaded: "RESOURCE_EXHAUSTED", Unavailable: "UNAVAILABLE"}.get(
        type(error), "INTERNAL"
    )


def scopes(metrics: Metrics, core: Any = "the core") -> RequestScopes:
    return RequestScopes(lambda: core, metrics, label)


def count(metrics: Metrics, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "rmserve_requests_total", {"method": "Score", "code": code}
    )
    return value or 0.0


def test_a_reply_is_counted_ok_and_timed() -> None:
    metrics = Metrics()
    with scopes(metrics).open("Score") as scope:
        assert scope.core() == "the core"
    assert scope.error is None and count(metrics, "OK") == 1
    duration = metrics.registry.get_sample_value(
        "rmserve_request_duration_seconds_count", {"method": "Score"}
    )
    assert duration == 1


def test_a_domain_error_is_kept_for_the_adapter_without_its_frames() -> None:
    metrics = Metrics()
    with scopes(metrics).open("Score") as scope:
        raise Overloaded("queue full", retry_after_ms=20)
    assert isinstance(scope.error, Overloaded) and scope.error.__traceback__ is None
    assert count(metrics, "RESOURCE_EXHAUSTED") == 1


def test_no_core_yet_is_unavailable() -> None:
    metrics = Metrics()
    with scopes(metrics, core=None).open("Score") as scope:
        scope.core()
    assert isinstance(scope.error, Unavailable) and count(metrics, "UNAVAILABLE") == 1


def test_a_bug_is_logged_without_its_message_and_answered_as_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, text = Metrics(), "secret prompt text"
    with scopes(metrics).open("Score") as scope:
        raise ValueError(text)  # the logged frame quotes this line, not the text
    assert type(scope.error) is RewardError and str(scope.error) == "ValueError: secret prompt text"
    assert count(metrics, "INTERNAL") == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Score failed with ValueError" in record.getMessage()
    assert "secret" not in record.getMessage()


def test_a_cancelled_call_passes_through_counted_cancelled() -> None:
    metrics = Metrics()
    with pytest.raises(asyncio.CancelledError), scopes(metrics).open("Score"):
        raise asyncio.CancelledError
    assert count(metrics, "CANCELLED") == 1


def test_what_the_adapter_lets_through_leaves_with_its_code() -> None:
    metrics = Metrics()
    with pytest.raises(KeyError), scopes(metrics).open("Score") as scope:
        scope.let_through("INVALID_ARGUMENT")
        raise KeyError("answered by the framework")
    assert scope.error is None and count(metrics, "INVALID_ARGUMENT") == 1
