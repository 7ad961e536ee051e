"""``rmserve train --ensemble K``: K full members, one after the other, then one artifact
(``--ensemble-kind shared``: K heads on one backbone instead, see ``shared_train``).

Member k is an ordinary training run with seed ``seed + k`` (its own initialisation, shuffling
and, with ``--bootstrap``, its own resample of the training pairs), written to
``WORK_DIR/member-k`` with its checkpoints in ``WORK_DIR/member-k.work``; ``--resume`` resumes
each. The members are then combined (``rmserve_training.ensemble.combine``) into ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve.engine.session import load_artifact
from rmserve.tools.evaluate import evaluate_file
from rmserve_training.ensemble.combine import combine
from rmserve_training.ensemble.shared_train import SharedEnsembleResult, train_shared
from rmserve_training.settings import TrainSettings
from rmserve_training.train.distributed import Cluster
from rmserve_training.train.loop import TrainResult, train


@dataclass(frozen=True)
class EnsembleResult:
    members: list[TrainResult]
    artifact: Path | None
    version: str | None
    eval_metrics: dict[str, float]

    @property
    def finished(self) -> bool:
        return self.artifact is not None

    def summary(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact) if self.artifact else None,
            "version": self.version,
            "eval_accuracy": self.eval_metrics.get("accuracy"),
            "members": [m.summary() for m in self.members],
            "finished": self.finished,
        }


def member_settings(settings: TrainSettings, k: int) -> TrainSettings:
    work = settings.resolved_work_dir()
    return TrainSettings.model_validate(
        {
            **settings.model_dump(),
            "ensemble": 1,
            "seed": settings.seed + k,
            "out": work / f"member-{k}",
            "work_dir": work / f"member-{k}.work",
            "name": f"{settings.name}-m{k}",
            "version": None,
        }
    )


def train_ensemble(
    settings: TrainSettings, cluster: Cluster | None = None
) -> EnsembleResult | SharedEnsembleResult:
    if settings.ensemble_kind == "shared":
        return train_shared(settings, cluster)
    members: list[TrainResult] = []
    for k in range(settings.ensemble):
        result = train(member_settings(settings, k), cluster)
        members.append(result)
        if not result.finished:  # stopped as asked (--stop-after-steps): resume later
            return EnsembleResult(members, None, None, {})
    if cluster is not None and not cluster.is_main:  # rank 0 wrote the members and combines
        return EnsembleResult(members, None, None, {})
    folders = [m.artifact for m in members if m.artifact is not None]
    manifest = combine(
        folders, settings.out, settings.name, settings.external_data, settings.version
    )
    report = evaluate_file(load_artifact(settings.out), settings.eval_data)
    metrics = {k: float(v) for k, v in report.items() if isinstance(v, float)}
    return EnsembleResult(members, settings.out.resolve(), manifest.version, metrics)
