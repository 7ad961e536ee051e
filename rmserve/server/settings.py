"""Server settings: one class, env prefix ``RMSERVE_``; ``rmserve serve`` builds its flags from it.
Its fields that name the served models (``settings_models``) and those of its listeners
(``settings_listeners``) are declared in their own modules; the checks across sections are here.

Never instantiated at import time: ``rmserve serve`` (or a test) builds one explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rmserve.observability.reward_watch import DEFAULT_LENGTH_WINDOW
from rmserve.server.settings_listeners import ListenerSettings
from rmserve.server.settings_models import ServedModelSettings
from rmserve.serving.memory_budget import smallest_inflight_bytes
from rmserve.serving.names import check_model_name

REMOVED_BATCH_POLICIES = ("measured", "analytic")  # the engine cost-model cuts


# pydantic collects fields from the last base first: the flags and the reference page list the
# served models', then the listeners', then these.
class ServerSettings(BaseSettings, ListenerSettings, ServedModelSettings):
    model_config = SettingsConfigDict(env_prefix="RMSERVE_", extra="forbid", frozen=True)

    provider: Literal["auto", "cuda", "cpu"] = Field(
        default="auto",
        description="onnxruntime provider: auto (CUDA if it loads, else CPU), cuda (refuse to "
        "start without it), cpu.",
    )
    gpu_device_id: int = Field(
        default=0,
        ge=0,
        le=1023,
        description="CUDA device the session runs on, an index among the devices this process "
        "sees (after CUDA_VISIBLE_DEVICES); a device that does not exist refuses to start. "
        "Ignored on the CPU. One server per GPU: run a replica per device.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="The engine's onnxruntime CPU threads in all (0: one per core), split "
        "evenly between the engine_workers batches that run at once.",
    )
    engine_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Batches the engine runs at once, each on its own thread (0: 2 on a CPU, "
        "at most one per intra-op thread; 1 on CUDA). They share one onnxruntime session, so "
        "the weights are loaded once.",
    )
    long_batch_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Of the engine_workers, how many may run a long batch at once: a pair (or "
        "a Prefer's two) over max_batch_tokens on its own, which always runs alone. 0: one less "
        "than engine_workers, at least one, so short pairs keep flowing on the other workers "
        "while long ones compute (docs/guides/serving.md#long-pairs).",
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Most pairs per engine batch (1 turns batching off; a Prefer's two "
        "responses always share a batch).",
    )
    # A str, not Literal["caps"]: a removed policy gets the validator's message, not argparse's.
    batch_policy: str = Field(
        default="caps",
        description="Where to cut a batch from the length-sorted queue: 'caps', the only policy, "
        "grows it as large as max_batch_size, max_batch_tokens and max_padding_ratio allow. "
        "'measured' and 'analytic' (cut by an engine cost model) were removed: they did not "
        "beat 'caps' beyond run-to-run noise in any benchmark "
        "(docs/guides/serving.md#batch-policy).",
    )
    max_batch_tokens: int = Field(
        default=1024,
        ge=1,
        le=1_048_576,
        description="Most padded tokens per engine batch (longest pair x pairs); a single "
        "longer item still runs alone. MiniLM on CPU peaks at 512-2048 "
        "padded tokens per batch (bench/throughput.py); raise it on GPUs.",
    )
    max_padding_ratio: float = Field(
        default=1.05,
        ge=1.0,
        le=100.0,
        description="Grow a batch only while padded tokens / real tokens stays at or under this. "
        "On CPU small sorted batches beat big padded ones: 1.05 "
        "served 8% more tokens/s than 1.25 with MiniLM on 2 cores (bench/throughput.py). GPUs "
        "favour larger batches.",
    )
    truncation: Literal["cut", "refuse"] = Field(
        default="cut",
        description="A pair over the artifact's max_length: 'cut' truncates it (the prompt from "
        "the left, then the response from the right; reported in the reply's truncated flags and "
        "rmserve_truncated_total) and scores it; 'refuse' answers its request INVALID_ARGUMENT "
        "(HTTP 400) naming the pair, its token count and the limit, and scores nothing of it.",
    )
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=10_000.0,
        description="How long the batcher may wait for a fuller batch, in milliseconds.",
    )
    max_queue_pairs: int = Field(
        default=16384,
        ge=1,
        le=10_000_000,
        description="Queued pairs beyond which new requests get RESOURCE_EXHAUSTED.",
    )
    max_request_pairs: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="Most pairs (or Prefer items) in one request; more is INVALID_ARGUMENT.",
    )
    max_message_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request or reply message in bytes; a larger request is "
        "INVALID_ARGUMENT, refused before it is parsed (gRPC itself refuses one over this "
        "plus 64 KiB with RESOURCE_EXHAUSTED; an HTTP body over it is 413).",
    )
    max_inflight_bytes: int | None = Field(
        default=None,
        ge=1024 + 1024 * 1024,
        le=1 << 40,
        description="Most bytes of requests (as sent) admitted and not yet answered; beyond it new "
        "requests get RESOURCE_EXHAUSTED with a retry hint, like a full queue. Unset: derived from "
        "memory_limit_bytes (docs/guides/operations.md#the-memory-formula), or "
        "4 x max_message_bytes + 1 MiB when no limit is known. At least max_message_bytes + 1 MiB.",
    )
    memory_limit_bytes: int | None = Field(
        default=None,
        ge=64 * 1024 * 1024,
        le=1 << 50,
        description="Memory this server may use, in bytes (unset: the container's cgroup limit, "
        "if any). With max_inflight_bytes unset it sizes that budget; the server refuses to "
        "start if it cannot hold the model and one request of max_message_bytes.",
    )
    grace_seconds: float = Field(
        default=25.0,
        ge=0.0,
        le=3600.0,
        description="On SIGTERM/SIGINT, how long accepted work may take to finish (keep it under "
        "the pod's terminationGracePeriodSeconds).",
    )
    warmup_runs: int = Field(
        default=2,
        ge=0,
        le=100_000,
        description="Warm-up runs of each shape before SERVING, shortest shapes first: the "
        "fullest batch and a lone pair at padded lengths 16, 32, 64, ... up to max_length (on "
        "CUDA: every shape class the batcher can form), within warmup_budget_seconds. "
        "0: no warm-up.",
    )
    warmup_budget_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="Time the warm-up may take: a shape starts only if it is predicted (from "
        "the last one, by padded tokens) to end within this; it and every longer shape are "
        "then skipped and logged, and their first request pays their first run. The shortest "
        "shape always runs.",
    )
    max_connection_age_seconds: float = Field(
        default=300.0,
        ge=0.0,
        le=86_400.0,
        description="Close client connections after this age so clients pick up new replicas "
        "(0: never).",
    )
    max_connection_age_grace_seconds: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="Time in-flight calls get on a connection closed for its age.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM server certificate chain; with tls_key_file it turns TLS on for gRPC.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle for mutual TLS: clients must present a certificate it signed.",
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="Require `authorization: Bearer <token>` metadata on every call except "
        "grpc.health.v1 (prefer the env var: flags show up in ps).",
    )
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve grpc.health.v1, and nothing else, in plaintext on this port "
        "(Kubernetes gRPC probes cannot speak TLS; 0: any free port; unset: off).",
    )
    golden_interval_seconds: float = Field(
        default=300.0,
        ge=0.0,
        le=86_400.0,
        description="Seconds between golden canary checks: the artifact's golden pairs "
        "re-scored in idle engine time; a drift beyond the dtype's tolerance turns readiness "
        "off for good (docs/guides/operations.md#golden-pairs). 0: no canary (the load check "
        "always runs).",
    )
    length_correlation_window: int = Field(
        default=DEFAULT_LENGTH_WINDOW,
        ge=2,
        le=1_048_576,
        description="Scored pairs (the most recent) over which rmserve_reward_length_correlation "
        "correlates response length with reward. 1024 puts its standard error near 0.03, well "
        "under the alert's margin (docs/guides/operations.md#watching-for-reward-hacking).",
    )
    ensemble_aggregate: Literal["mean", "min", "mean_minus_std"] = Field(
        default="mean",
        description="Ensemble artifacts: how normalised member rewards become the served reward "
        "when a request does not say (mean, min, or mean - uncertainty_penalty * std).",
    )
    ensemble_uncertainty_penalty: float = Field(
        default=1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Ensemble artifacts: lambda of mean - lambda * std when a request does not "
        "set uncertainty_penalty.",
    )
    log_request_content: bool = Field(
        default=False,
        description="Debugging only: log prompts and responses of each request at DEBUG level. "
        "Off, no log line carries request text.",
    )

    @field_validator("batch_policy")
    @classmethod
    def _only_caps(cls, value: str) -> str:
        if value in REMOVED_BATCH_POLICIES:
            raise ValueError(
                f"batch_policy {value!r} was removed (it did not beat 'caps' beyond run-to-run "
                "noise in any benchmark: docs/guides/serving.md#batch-policy); set 'caps' or "
                "leave it unset"
            )
        if value != "caps":
            raise ValueError(f"batch_policy must be 'caps', got {value!r}")
        return value

    @field_validator("max_request_pairs")
    @classmethod
    def _fits_the_queue(cls, value: int, info: ValidationInfo) -> int:
        queue = info.data.get("max_queue_pairs")
        if queue is not None and value > queue:
            raise ValueError(
                f"max_request_pairs ({value}) must not exceed max_queue_pairs ({queue}), "
                "or a full-size request could never be queued"
            )
        return value

    @model_validator(mode="after")
    def _one_request_fits(self) -> ServerSettings:
        budget = self.max_inflight_bytes
        if budget is not None and budget < smallest_inflight_bytes(self.max_message_bytes):
            raise ValueError(
                f"max_inflight_bytes ({budget}) must be at least max_message_bytes + 1 MiB "
                f"({smallest_inflight_bytes(self.max_message_bytes)}), or a request at the size "
                "limit could never run beside small calls"
            )
        return self

    @model_validator(mode="after")
    def _some_model(self) -> ServerSettings:
        if self.artifact is None and not self.models and self.models_file is None:
            raise ValueError(
                "nothing to serve: set artifact (--artifact / RMSERVE_ARTIFACT), or name models "
                "(--model NAME=PATH / RMSERVE_MODELS, or --models-file / RMSERVE_MODELS_FILE)"
            )
        if self.default_model is not None:
            check_model_name(self.default_model)
        return self

    @model_validator(mode="after")
    def _security_fits(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if self.auth_token is not None and not self.auth_token.get_secret_value().strip():
            raise ValueError("auth_token must not be empty")
        if self.http_port is not None and (self.tls or self.auth_token is not None):
            raise ValueError(
                "the HTTP front (http_port) speaks plaintext without auth: leave it unset when "
                "TLS or auth_token is on"
            )
        return self

    @property
    def tls(self) -> bool:
        """True when gRPC is served over TLS."""
        return self.tls_cert_file is not None
