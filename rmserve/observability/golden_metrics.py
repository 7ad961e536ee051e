"""The golden pairs' metrics, one series per model, set by the load check and then by each check
of the golden canary (``rmserve.serving.golden_canary``):

- ``rmserve_golden_max_abs_diff`` (gauge): max |reward − reference| over the golden pairs at the
  latest check, in raw reward units (+Inf when a reward was not a finite number);
- ``rmserve_golden_drift_ratio`` (gauge): the largest |Δ| / allowed over the pairs at the latest
  check; above 1 the model drifted (the alert ``RmserveGoldenDrift`` and readiness follow it);
- ``rmserve_golden_checks_total`` (counter): checks (the load check included) by ``result``
  (ok, drift, error).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GoldenMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.max_abs_diff = Gauge(
            "rmserve_golden_max_abs_diff",
            "Max |reward - reference| over the golden pairs at the latest canary check.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.drift_ratio = Gauge(
            "rmserve_golden_drift_ratio",
            "Largest |reward - reference| / allowed over the golden pairs at the latest check; "
            "above 1 is drift (readiness turns false).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.checks = Counter(
            "rmserve_golden_checks", "Golden canary checks by result (ok, drift, error).",
            ["model", "result"], registry=registry,
        )  # fmt: skip

    def record(self, model: str, max_abs_diff: float, drift_ratio: float, ok: bool) -> None:
        self.max_abs_diff.labels(model=model).set(max_abs_diff)
        self.drift_ratio.labels(model=model).set(drift_ratio)
        self.checks.labels(model=model, result="ok" if ok else "drift").inc()

    def failed(self, model: str) -> None:
        """A check that could not score (an engine error): counted, the gauges kept."""
        self.checks.labels(model=model, result="error").inc()
