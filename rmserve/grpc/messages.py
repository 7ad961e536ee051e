"""protobuf messages ↔ core values for the gRPC adapter: what a request asks, what a reply says."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import Message

from rmserve.artifact.manifest import Manifest, ParityReport
from rmserve.batching.pending import Preference
from rmserve.errors import InvalidRequest
from rmserve.rewards.ensemble import AggregateName
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
