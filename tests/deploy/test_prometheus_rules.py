"""The PrometheusRule through promtool: `check rules` on its groups, `test rules` on the alert
logic (tests/deploy/prometheus_rules_test.yaml), and the Grafana dashboard's structure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.prom_tools import (
    DASHBOARD,
    dashboard_queries,
    require_binary,
    rule_groups,
    write_rules,
)

PANELS = {
    "Throughput",
    "Request latency p50 / p99",
    "Queue depth",
    "Batch size",
    "Padding waste",
    "Reward distribution",
    "Reward-length correlation",
    "Ensemble disagreement",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_promtool_check_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path / "rules.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules_catches_a_bad_expression(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]})
    )
    assert promtool("check", "rules", str(bad)).returncode != 0


def test_alert_rules_fire_as_intended(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", annotations=False)
    cases = shutil.copy(Path(__file__).with_name("prometheus_rules_test.yaml"), tmp_path)
    result = promtool("test", "rules", str(cases), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_summary() -> None:
    cases = Path(__file__).with_name("prometheus_rules_test.yaml").read_text()
    alerts = [r for g in rule_groups() for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "RmserveHighP99Latency",
        "RmserveQueueSaturated",
        "RmserveHighErrorRate",
        "RmserveCpuFallback",
        "RmserveRewardTracksLength",
        "RmserveEnsembleDisagreementRising",
    }
    for alert in alerts:
        assert f"alertname: {alert['alert']}\n" in cases, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"], alert["alert"]


def test_dashboard_has_the_key_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert titles >= PANELS
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for _, expr in dashboard_queries():
        assert 'namespace=~"$namespace"' in expr, expr
    assert variables == {"datasource", "namespace"}
