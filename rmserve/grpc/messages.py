"""protobuf messages ↔ core values for the gRPC adapter: what a request asks, what a reply says."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import Message

from rmserve.artifact.manifest import Manifest, ParityReport
from rmserve.batching.pending import Preference
from rmserve.errors import InvalidRequest
from rmserve.rewards.ensemble import AggregateName
from rmserve.serving.composite import Composite, CompositePreference, CompositeScore
from rmserve.serving.core import RewardCore
from rmserve.serving.replies import EnsembleSpread, RewardOptions, ServedScore
from rmserve.v1 import reward_pb2


def require_text(message: Message, name: str, where: str) -> str:
    if not message.HasField(name):
        raise InvalidRequest(f"{where}{name} is required (send an empty string for empty text)")
    value = getattr(message, name)
    assert isinstance(value, str)
    return value


AGGREGATE_OF: dict[int, AggregateName | None] = {
    reward_pb2.AGGREGATE_UNSPECIFIED: None,
    reward_pb2.AGGREGATE_MEAN: "mean",
    reward_pb2.AGGREGATE_MIN: "min",
    reward_pb2.AGGREGATE_MEAN_MINUS_STD: "mean_minus_std",
}


class ScoreOptionsMessage(Protocol):
    """The reward options every scoring request carries (Score, ScoreBatch, ScoreGroup)."""

    @property
    def normalize(self) -> bool: ...
    @property
    def aggregate(self) -> int: ...
    @property
    def uncertainty_penalty(self) -> float: ...
    @property
    def return_members(self) -> bool: ...

    def HasField(self, field_name: Any) -> bool: ...


def reward_options(core: RewardCore, request: ScoreOptionsMessage) -> RewardOptions:
    """A scoring request's normalize / aggregate / uncertainty_penalty / return_members."""
    if request.aggregate not in AGGREGATE_OF:
        raise InvalidRequest(f"aggregate: unknown value {request.aggregate}")
    penalty = request.uncertainty_penalty if request.HasField("uncertainty_penalty") else None
    return core.reward_options(
        request.normalize, AGGREGATE_OF[request.aggregate], penalty, request.return_members
    )


def composite_options(target: Composite, request: ScoreOptionsMessage) -> list[RewardOptions]:
    """Each component's options for a request with ``reward_weights`` (always normalised)."""
    if request.aggregate not in AGGREGATE_OF:
        raise InvalidRequest(f"aggregate: unknown value {request.aggregate}")
    penalty = request.uncertainty_penalty if request.HasField("uncertainty_penalty") else None
    return target.options(AGGREGATE_OF[request.aggregate], penalty)


def composite_fields(score: CompositeScore) -> dict[str, Any]:
    """The fields ScoreResult and ScoreResponse share, from one composite score."""
    return {
        "reward": score.reward,
        "truncated": score.truncated,
        "response_truncated": score.response_truncated,
        "num_tokens": score.num_tokens,
        "components": [
            reward_pb2.RewardComponent(
                model=c.name,
                model_version=c.version,
                weight=c.weight,
                reward=c.reward,
                truncated=c.score.truncated,
                response_truncated=c.score.response_truncated,
                num_tokens=c.score.num_tokens,
            )
            for c in score.components
        ],
    }


def composite_prefer_result(p: CompositePreference) -> reward_pb2.PreferResult:
    return reward_pb2.PreferResult(
        probability_a=p.probability_a,
        reward_a=p.reward_a,
        reward_b=p.reward_b,
        truncated_a=p.truncated_a,
        truncated_b=p.truncated_b,
        components=[
            reward_pb2.PreferComponent(
                model=c.name,
                model_version=c.version,
                weight=c.weight,
                reward_a=c.reward_a,
                reward_b=c.reward_b,
            )
            for c in p.components
        ],
    )


def ensemble_stats(spread: EnsembleSpread | None) -> reward_pb2.EnsembleStats | None:
    if spread is None:
        return None
    return reward_pb2.EnsembleStats(
        mean=spread.mean, std=spread.std, min=spread.min, member_rewards=spread.members or ()
    )


def score_fields(served: ServedScore) -> dict[str, Any]:
    """The fields ScoreResult and ScoreResponse share, from one served score."""
    score = served.score
    return {
        "reward": served.reward,
        "truncated": score.truncated,
        "response_truncated": score.response_truncated,
        "num_tokens": score.num_tokens,
        "ensemble": ensemble_stats(served.ensemble),
    }


def score_result(served: ServedScore) -> reward_pb2.ScoreResult:
    return reward_pb2.ScoreResult(**score_fields(served))


def parity_pb(report: ParityReport | None) -> reward_pb2.ParityReport | None:
    if report is None:
        return None
    return reward_pb2.ParityReport(
        status=report.status,
        reference=report.reference,
        provider=report.provider or "",
        pairs=report.pairs,
        max_abs_diff=report.max_abs_diff,
        rank_agreement=report.rank_agreement,
        batch_invariance_max_abs_diff=report.batch_invariance_max_abs_diff,
        tolerance=report.tolerance,
        reason=report.reason,
        accuracy=report.accuracy,
        reference_accuracy=report.reference_accuracy,
        spearman=report.spearman,
    )


def prefer_result(p: Preference) -> reward_pb2.PreferResult:
    return reward_pb2.PreferResult(
        probability_a=p.probability_a,
        reward_a=p.a.reward,
        reward_b=p.b.reward,
        truncated_a=p.a.truncated,
        truncated_b=p.b.truncated,
        probability_a_std=p.probability_a_std,
    )


def members_pb(manifest: Manifest) -> list[reward_pb2.EnsembleMember]:
    return [
        reward_pb2.EnsembleMember(
            version=m.version,
            normalization_mean=m.normalization.mean,
            normalization_std=m.normalization.std,
        )
        for m in manifest.ensemble or ()
    ]


def ensemble_kind(manifest: Manifest) -> str:
    if manifest.ensemble is None:
        return ""
    return manifest.ensemble_kind or "full"


def model_info(core: RewardCore, is_default: bool) -> reward_pb2.ModelInfo:
    """What GetModelInfo says of one served model."""
    manifest, limits, config = core.artifact.manifest, core.config.limits, core.config
    return reward_pb2.ModelInfo(
        name=manifest.name,
        version=manifest.version,
        max_length=manifest.preprocessing.max_length,
        normalization_mean=manifest.normalization.mean,
        normalization_std=manifest.normalization.std,
        provider=core.engine.provider,
        device=core.engine.device,
        max_batch_size=limits.max_batch_size,
        max_batch_tokens=limits.max_batch_tokens or 0,  # 0: no cap
        max_request_pairs=config.max_request_pairs,
        max_queue_pairs=config.max_queue_pairs,
        max_queue_delay_ms=limits.max_queue_delay_s * 1000.0,
        backbone=manifest.backbone,
        pooling=manifest.pooling,
        dtype=manifest.dtype,
        parameters=manifest.parameters or 0,
        parity=parity_pb(manifest.parity),
        members=members_pb(manifest),
        ensemble_kind=ensemble_kind(manifest),
        engine_workers=config.engine_workers,
        default_aggregate=config.ensemble_aggregate if manifest.ensemble else "",
        default_uncertainty_penalty=config.ensemble_uncertainty_penalty
        if manifest.ensemble
        else 0.0,
        model=core.name,
        is_default=is_default,
    )
