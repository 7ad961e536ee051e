"""Wiring: gRPC server, health, reflection, metrics endpoint, model loading and shutdown.

Order of life: bind ports with health NOT_SERVING (a port that cannot be bound: ListenError)
→ write the port file, if asked for → load the artifacts and engines (one per served model)
→ warm up → SERVING. On
SIGTERM/SIGINT: health NOT_SERVING (it keeps answering), new reward RPCs get UNAVAILABLE,
accepted work finishes within ``grace_seconds``, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2

from rmserve.artifact.manifest import Manifest
from rmserve.engine.session import Engine
from rmserve.engine.threads import engine_workers
from rmserve.http.body import BodyLimits
from rmserve.http.front import HttpFront, HttpLimits
from rmserve.observability.metrics import Metrics
from rmserve.observability.metrics_server import MetricsServer
from rmserve.server.golden_watch import GoldenWatch
from rmserve.server.grpc_server import SERVICE_NAME, health_grpc_server, reward_grpc_server
from rmserve.server.listeners import bind_grpc, binding, write_port_file
from rmserve.server.model_build import EngineFactory, core_config, ort_engine
from rmserve.server.model_loading import (
    DEFAULT_MODEL_CHECKS,
    ModelCheck,
    NamedArtifact,
    checked_engine,
    load_named,
)
from rmserve.server.model_set import model_set
from rmserve.server.security import server_credentials
from rmserve.server.settings import ServerSettings
from rmserve.server.swap import ModelSwapper
from rmserve.serving.admission import SharedAdmission
from rmserve.serving.allocator import map_big_allocations
from rmserve.serving.core import RewardCore
from rmserve.serving.memory_budget import cgroup_memory_limit
from rmserve.serving.models import ModelRegistry
from rmserve.serving.models_memory import (
    ModelFootprint,
    engine_footprint,
    required_bytes,
    resolve_inflight,
)

log = logging.getLogger(__name__)

HEALTH_SERVICES = ("", SERVICE_NAME)  # "" is the whole server
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# After the core has drained, calls still in a handler (answering UNAVAILABLE, flushing a
# reply) get this long before gRPC cancels them; stop() returns as soon as they are done, so a
# generous value costs nothing normally and keeps a loaded machine from turning them CANCELLED.
FINAL_FLUSH_SECONDS = 5.0


def log_parity(manifest: Manifest) -> None:
    """Say at start-up what the artifact's export check showed, never less than it showed."""
    report = manifest.parity
    if report is None:
        log.info("%s weights; the artifact records no parity report (format 1)", manifest.dtype)
    elif report.status == "unchecked":
        log.warning(
            "%s weights UNCHECKED against the %s model: %s", manifest.dtype, report.reference,
            report.reason,
        )  # fmt: skip
    else:
        log.info(
            "%s weights checked against the %s model on %s: max|Δ| %.2e, rank agreement %.4f "
            "over %d pairs",
            manifest.dtype, report.reference, report.provider, report.max_abs_diff or 0.0,
            report.rank_agreement or 0.0, report.pairs,
        )  # fmt: skip


class RewardServer:
    """One server instance; several may live in one process (each has its own registry)."""

    def __init__(
        self,
        settings: ServerSettings,
        engine_factory: EngineFactory = ort_engine,
        model_checks: Sequence[ModelCheck] | None = None,
    ) -> None:
        """``model_checks``: what every model must pass before it serves, at start-up and
        before a swap (``rmserve.server.model_loading.ModelCheck``; None: the defaults)."""
        self.settings = settings
        self.metrics = Metrics(length_correlation_window=settings.length_correlation_window)
        self.models: ModelRegistry | None = None
        self.model_checks = tuple(DEFAULT_MODEL_CHECKS if model_checks is None else model_checks)
        self.swapper = ModelSwapper(
            settings, lambda: self.models, self.build_core, self.metrics, self._watch_golden
        )
        self.port = 0
        self.health_port = 0  # the plaintext health-only port (0 when it is off)
        self._engine_factory = engine_factory
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None  # made in start(): it binds to the running loop
        self._health_grpc: grpc.aio.Server | None = None
        self._metrics_server: MetricsServer | None = None
        self._http: HttpFront | None = None
        self.goldens: dict[str, GoldenWatch] = {}  # each model's golden canary, once loaded
        self._stop = asyncio.Event()
        self._started = False  # every listener bound and the gRPC server started
        self._stopped = False

    @property
    def core(self) -> RewardCore | None:
        """The default model's current version (None while loading)."""
        return self.models.default_core if self.models is not None else None

    @property
    def golden(self) -> GoldenWatch | None:
        """The default model's golden canary (None while loading)."""
        return self.goldens.get(self.models.default) if self.models is not None else None

    @property
    def metrics_port(self) -> int:
        return self._metrics_server.port if self._metrics_server else 0

    @property
    def http_port(self) -> int:
        """Port of the OpenRLHF-compatible HTTP front (0 when it is off)."""
        return self._http.port if self._http else 0

    async def start(self) -> None:
        """Bind the ports and answer health checks (NOT_SERVING until ``load`` finishes); then
        write the port file. A port that cannot be bound raises ListenError; ``stop`` closes
        the listeners bound before it."""
        map_big_allocations()
        s = self.settings
        if s.port_file is not None:
            s.port_file.unlink(missing_ok=True)  # a reader never sees an earlier run's ports
        swap = self.swapper.swap if s.auth_token is not None else None
        self._grpc = server = reward_grpc_server(
            s, lambda: self.models, self.metrics, swap, self._health
        )
        for name in HEALTH_SERVICES:
            await self._health.set(name, NOT_SERVING)
        credentials = server_credentials(s)
        with binding("metrics", s.host, s.metrics_port):
            self._metrics_server = MetricsServer(
                self.metrics.registry,
                s.host,
                s.metrics_port,
                idle_timeout=s.metrics_idle_timeout_seconds,
                max_connections=s.metrics_max_connections,
            )
        if s.http_port is not None:
            self._http = HttpFront(
                lambda: self.models,
                self.metrics,
                s.max_message_bytes,
                s.log_request_content,
                HttpLimits(
                    BodyLimits(
                        s.max_message_bytes,
                        s.http_body_timeout_seconds,
                        s.http_min_body_bytes_per_second,
                    ),
                    s.http_header_timeout_seconds,
                    s.http_max_inflight_bytes_per_client,
                ),
            )
            with binding("HTTP", s.host, s.http_port):
                await self._http.start(s.host, s.http_port)
        if s.health_port is not None:
            await self._start_health_port(s.host, s.health_port)
        # gRPC binds last and starts at once: stop() does not free the port of a grpc.aio
        # server that never started, so nothing may fail between the two.
        self.port = bind_grpc(server, "gRPC", s.host, s.port, credentials)
        await server.start()
        self._started = True
        log.info(
            "gRPC%s on %s:%d, metrics on :%d%s",
            " (TLS)" if s.tls else "",
            s.host,
            self.port,
            self.metrics_port,
            f", plaintext health on :{self.health_port}" if self.health_port else "",
        )
        if self._http is not None:
            self._http.announce(s.host)
        if s.port_file is not None:
            write_port_file(s.port_file, self.bound_ports())

    def bound_ports(self) -> dict[str, int | None]:
        """Each listener's port, as the port file has them (None: that listener is off)."""
        return {
            "grpc": self.port or None,
            "health": self.health_port or None,
            "http": self.http_port or None,
            "metrics": self.metrics_port or None,
        }

    async def _start_health_port(self, host: str, port: int) -> None:
        """grpc.health.v1 alone, in plaintext: what Kubernetes gRPC probes can reach."""
        self._health_grpc = server = health_grpc_server(self._health)
        self.health_port = bind_grpc(server, "health", host, port)
        await server.start()

    async def load(self) -> None:
        """Load every model's artifact and engine off the loop, warm them up, then report
        SERVING."""
        s = self.settings
        chosen = model_set(s)
        named, default = await load_named(chosen.sources, chosen.default)
        engines: list[Engine] = []
        try:
            for model in named:
                engines.append(await self.build_engine(model))
            footprints = [self.footprint(m, e) for m, e in zip(named, engines, strict=True)]
            inflight_bytes = self._inflight_budget(footprints)
        except BaseException:  # a later model or the memory limit failed: free what was built
            engines.clear()
            raise
        models = ModelRegistry(SharedAdmission(inflight_bytes, self.metrics), default)
        try:
            for model, engine in zip(named, engines, strict=True):
                models.add(self.make_core(model, engine, models.shared, model.name == default))
        except BaseException:
            await models.astop(0.0)
            raise
        self.models = models
        self.metrics.watch_models(
            lambda: models.names,
            lambda name: sum(core.pending_rows for core in models.cores(name)),
            lambda name: sum(core.inflight for core in models.cores(name)),
        )
        models.shared.start()
        for name in models.names:
            await models.core(name).astart()
            if self._stop.is_set():
                return
        watches = [self._golden_watch(models.core(name)) for name in models.names]
        for service in HEALTH_SERVICES:
            await self._health.set(service, SERVING)
        for watch in watches:
            self.goldens[watch.model] = watch
            watch.start()
        for name in models.names:
            core = models.core(name)
            log.info(
                "SERVING %s%s %s on %s (%s), %d batch%s at once",
                name, " (default)" if name == default and len(models.names) > 1 else "",
                core.model_version, core.engine.provider, core.engine.device,
                core.config.engine_workers, "" if core.config.engine_workers == 1 else "es",
            )  # fmt: skip

    def _golden_watch(self, core: RewardCore) -> GoldenWatch:
        """``core``'s golden canary (not started); its drift turns the whole server's readiness
        off."""
        interval = self.settings.golden_interval_seconds
        return GoldenWatch(core, self.metrics.golden, interval, self._not_serving)

    async def _watch_golden(self, core: RewardCore) -> None:
        """A swap's new version replaces its model's canary (called just before the switch)."""
        old = self.goldens.pop(core.name, None)
        if old is not None:
            await old.stop()
        watch = self.goldens[core.name] = self._golden_watch(core)
        watch.start()

    async def _not_serving(self) -> None:
        for name in HEALTH_SERVICES:
            await self._health.set(name, NOT_SERVING)

    async def build_engine(self, model: NamedArtifact) -> Engine:
        """The model's engine, built (golden pairs checked, in the production factory) and
        through the model checks, off the event loop."""
        log_parity(model.artifact.manifest)
        return await checked_engine(
            model, lambda artifact: self._engine_factory(artifact, self.settings),
            self.model_checks,
        )  # fmt: skip

    def workers(self, engine: Engine) -> int:
        s = self.settings
        return engine_workers(engine.provider, s.intra_op_threads, s.engine_workers)

    def footprint(self, model: NamedArtifact, engine: Engine) -> ModelFootprint:
        """What ``model`` on ``engine`` adds to the memory formula, activations included."""
        s = self.settings
        return engine_footprint(
            model.name, model.artifact, engine.provider, self.workers(engine),
            s.max_batch_tokens, s.long_batch_workers,
        )  # fmt: skip

    def make_core(
        self, model: NamedArtifact, engine: Engine, shared: SharedAdmission, watch_rewards: bool
    ) -> RewardCore:
        """One model's core over ``shared`` (not started)."""
        manifest = model.artifact.manifest
        self.metrics.model_info.labels(
            name=model.name, version=manifest.version, provider=engine.provider
        ).set(1)
        config = core_config(self.settings, shared.max_inflight_bytes, self.workers(engine))
        return RewardCore(
            engine, model.artifact, config, self.metrics, shared, model.name, watch_rewards
        )

    async def build_core(
        self, model: NamedArtifact, shared: SharedAdmission, watch_rewards: bool
    ) -> RewardCore:
        """One model's core over ``shared``, its engine built and checked (not started)."""
        engine = await self.build_engine(model)
        return self.make_core(model, engine, shared, watch_rewards)

    def _inflight_budget(self, models: Sequence[ModelFootprint]) -> int:
        """``max_inflight_bytes`` as set or derived from the memory limit and every model, each
        with its engine's activations (docs/guides/operations.md#the-memory-formula)."""
        s = self.settings
        memory_limit = s.memory_limit_bytes or cgroup_memory_limit()
        budget = resolve_inflight(
            s.max_inflight_bytes, memory_limit, s.max_message_bytes, models, s.max_queue_pairs
        )
        bound = required_bytes(models, budget, s.max_queue_pairs)
        host_activations = sum(m.host_activations for m in models)
        device_activations = sum(m.activations for m in models if not m.on_cpu)
        one = len(models) == 1
        log.info(
            "memory: %d MiB of requests in flight at most (max_inflight_bytes), bound %d MiB "
            "for %s and settings, %d MiB of it the engine%s activations (limit: %s)%s",
            budget >> 20,
            bound >> 20,
            "this model" if one else f"these {len(models)} models",
            host_activations >> 20,
            "'s" if one else "s'",
            f"{memory_limit >> 20} MiB" if memory_limit else "none known",
            f"; on the GPU, activations up to {device_activations >> 20} MiB"
            if device_activations
            else "",
        )
        return budget

    def request_stop(self) -> None:
        """What SIGTERM/SIGINT do: begin a graceful drain (``run`` finishes it)."""
        if not self._stop.is_set():
            log.info("stop requested: draining for up to %.1fs", self.settings.grace_seconds)
            self._stop.set()
            if self.models is not None:
                self.models.begin_drain()

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, refuse new reward RPCs, finish accepted work, close."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self.request_stop()
        else:  # a listener failed to bind: close the others quietly, nothing was served
            self._stop.set()
        await self._health.enter_graceful_shutdown()
        for watch in self.goldens.values():
            await watch.stop()
        if self.models is not None:
            await self.models.astop(self.settings.grace_seconds)
        # The stopped core refuses (UNAVAILABLE) whatever the fronts still dispatch while their
        # graceful stops wait for the handlers in progress; gRPC resets streams it no longer
        # dispatches, which clients retry like UNAVAILABLE.
        if self._http is not None:
            await self._http.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=FINAL_FLUSH_SECONDS)
        if self._health_grpc is not None:  # probes saw NOT_SERVING throughout the drain
            await self._health_grpc.stop(grace=0.5)
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._started:
            log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or ``request_stop``), then drain and return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            loader = asyncio.create_task(self.load())
            stop_waiter = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({loader, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if loader in done:
                loader.result()  # raises if loading failed
                await stop_waiter
            else:
                loader.cancel()
                await asyncio.gather(loader, return_exceptions=True)
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
