"""The names that k8s/ relies on, checked against a live `/metrics` scrape of a running server
(not a list written here): the HPA's metric, every metric in the alerts and the dashboard. Then
`promtool check metrics` on a scrape taken after load."""

from __future__ import annotations

import re
import subprocess

from tests.support.k8s_render import VARIANTS, adapter_series_for, hpa_metric_name, render
from tests.support.live import LiveServer, drive_load
from tests.support.prom_tools import dashboard_queries, require_binary, rule_groups

SAMPLE = re.compile(r"^(rmserve_[a-z_]+)(?:\{(.*)\})? (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def exposed_names(scrape: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line[:1].isalpha()}


def referenced_metrics() -> set[str]:
    """Metric names in the PromQL of the alerts and the dashboard (not recording-rule names)."""
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]]
    exprs += [expr for _, expr in dashboard_queries()]
    return {
        name for expr in exprs for name in re.findall(r"(?<![\w:])(rmserve_[a-z_]+)(?![\w:])", expr)
    }


def test_hpa_metric_is_in_a_live_scrape(live_server: LiveServer) -> None:
    names = exposed_names(live_server.scrape())
    for variant in VARIANTS.values():
        series = adapter_series_for(hpa_metric_name(render(variant)))
        assert series in names, f"the HPA scales on {series}, which the server does not export"


def test_alerts_and_dashboard_use_exported_metrics(live_server: LiveServer) -> None:
    drive_load(live_server.target, rounds=2)
    names = exposed_names(live_server.scrape())
    referenced = referenced_metrics()
    assert len(referenced) >= 10, referenced
    missing = sorted(m for m in referenced if m not in names)
    assert not missing, f"referenced in alerts/dashboard but not exported: {missing}"
    for name in referenced:  # counters and histograms are referenced by a sample name
        if name.endswith(SUFFIXES[:3]):
            assert name.rsplit("_", 1)[0] + "_count" in names, name


def test_promtool_check_metrics_after_load(live_server: LiveServer) -> None:
    done = drive_load(live_server.target)
    scrape = live_server.scrape()
    samples = {
        (name, frozenset(LABEL.findall(labels))): float(value)
        for name, labels, value in SAMPLE.findall(scrape)
    }
    for method in ("Score", "ScoreBatch", "Prefer"):
        key = ("rmserve_requests_total", frozenset({("method", method), ("code", "OK")}))
        assert samples.get(key, 0.0) >= done[method], (key, scrape[:3000])
    assert done["INVALID_ARGUMENT"] == 1
    result = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_reward_hacking_metrics_are_in_a_live_scrape(live_server: LiveServer) -> None:
    """The length correlation is defined after load (lengths and rewards vary); the ensemble
    histogram is exposed, empty, by a single-model artifact."""
    drive_load(live_server.target, rounds=2)
    samples = {
        (name, labels): float(value) for name, labels, value in SAMPLE.findall(live_server.scrape())
    }
    correlation = samples[("rmserve_reward_length_correlation", "")]
    assert -1.0 <= correlation <= 1.0, correlation
    assert samples[("rmserve_ensemble_std_count", "")] == 0
    assert samples[("rmserve_ensemble_std_bucket", 'le="+Inf"')] == 0
