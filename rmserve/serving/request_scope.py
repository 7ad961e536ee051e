"""What every protocol adapter does around one request, written once: the ready core or
``Unavailable``, the request's count and duration by method and code, the domain error kept for
the adapter to answer, and a bug logged (without request text) and answered as an internal error.

An adapter (``rmserve.grpc.service``, ``rmserve.http.front``) keeps only what its protocol
decides: how a request is read and sized, and its one table from domain error to status code::

    with scopes.open("Score") as scope:
        models = scope.core()  # the served models (``rmserve.serving.models``)
        with models.select(name, weights) as target:
            scope.served_by(names)
            ...
        return reply
    answer(scope.error)  # reached only when the request failed
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType

from rmserve.errors import RewardError, Unavailable, log_unexpected
from rmserve.observability.metrics import Metrics
from rmserve.serving.models import ModelRegistry

log = logging.getLogger(__name__)

OK = "OK"
CANCELLED = "CANCELLED"  # the caller hung up or gave up (its deadline passed in gRPC)
# An adapter's metrics label (the gRPC status code's name) for a domain error.
CodeOf = Callable[[RewardError], str]


class RequestScope:
    """One request of one adapter, used as a ``with`` block around all of its handling.

    A ``RewardError`` raised in the block is kept as ``error`` (its traceback, which holds the
    request's frames, dropped) and the block is left without it; any other ``Exception`` is a
    bug: logged, kept as ``RewardError("Type: message")``. Both are the adapter's to answer after
    the block. A ``BaseException`` (a cancelled call) passes through, counted ``CANCELLED``."""

    def __init__(
        self,
        method: str,
        core: Callable[[], ModelRegistry | None],
        metrics: Metrics,
        code_of: CodeOf,
        log_content: bool,
    ) -> None:
        self.error: RewardError | None = None
        self._models: tuple[str, ...] = ()  # the models that scored it, for their metrics
        self._method = method
        self._core = core
        self._metrics = metrics
        self._code_of = code_of
        self._log_content = log_content
        self._code = OK
        self._let_through = False
        self._start = time.perf_counter()

    def core(self) -> ModelRegistry:
        """The served models; ``Unavailable`` while the server is still loading them."""
        core = self._core()
        if core is None:
            raise Unavailable("server is loading the model; retry later")
        return core

    def served_by(self, models: tuple[str, ...]) -> None:
        """The request was given to these models: ``rmserve_model_requests_total`` counts it
        once for each."""
        self._models = models

    def let_through(self, code: str) -> None:
        """The exception being raised is answered by the adapter's framework (say aiohttp's
        413): count the request as ``code`` and let the exception leave the block."""
        self._let_through = True
        self._code = code

    def __enter__(self) -> RequestScope:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        raised: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            return self._settle(raised)
        finally:
            self._metrics.requests.labels(method=self._method, code=self._code).inc()
            for model in self._models:
                self._metrics.model_requests.labels(
                    model=model, method=self._method, code=self._code
                ).inc()
            self._metrics.request_duration.labels(method=self._method).observe(
                time.perf_counter() - self._start
            )

    def _settle(self, raised: BaseException | None) -> bool:
        """Whether the block's exception is kept for the adapter to answer (True) or goes on."""
        if raised is None or self._let_through:
            return False
        if isinstance(raised, RewardError):
            raised.__traceback__ = None  # its frames held the request
            self.error = raised
        elif isinstance(raised, Exception):  # a bug: answer it with the reason, keep serving
            log_unexpected(log, self._method, raised, self._log_content)
            self.error = RewardError(f"{type(raised).__name__}: {raised}")
        else:
            self._code = CANCELLED
            return False
        self._code = self._code_of(self.error)
        return True


class RequestScopes:
    """An adapter's requests: one ``RequestScope`` per request, over the same core and metrics."""

    def __init__(
        self,
        core: Callable[[], ModelRegistry | None],
        metrics: Metrics,
        code_of: CodeOf,
        log_content: bool = False,
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._code_of = code_of
        self._log_content = log_content  # the log_request_content debug setting

    @property
    def log_content(self) -> bool:
        return self._log_content

    def open(self, method: str) -> RequestScope:
        return RequestScope(method, self._core, self._metrics, self._code_of, self._log_content)
