"""A real Prometheus (Debian's package) on a free loopback port scrapes a running rmserve every
second, with the PrometheusRule's groups loaded. After load, its HTTP API must show traffic,
a finite p99, the HPA's metric through the prometheus-adapter rule, healthy alert rules, and
data for every dashboard query."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.k8s_render import (
    VARIANTS,
    adapter_rule,
    adapter_series_for,
    hpa_metric_name,
    render,
)
from tests.support.live import LiveServer, drive_load
from tests.support.prom_tools import dashboard_queries, require_binary, write_rules

NAMESPACE, POD = "rl-test", "rmserve-0"  # what a ServiceMonitor target carries in a cluster
# Wide enough that every test after the load still sees it, however slowly the suite runs.
WINDOW = "10m"
# Prometheus listens on port 0 (any free port, so nothing can take it first) and logs the
# address it got at info level (exporter-toolkit's line).
LISTENING = re.compile(r'msg="Listening on" address=(\S+)')


def get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read().decode())


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        reply = get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def eventually(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        while not (result := self.query(promql)):
            assert time.monotonic() < end, f"no data for {promql} after {timeout}s"
            time.sleep(0.5)
        return result


@pytest.fixture(scope="module")
def prometheus(
    live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = require_binary("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    write_rules(folder / "rules.yaml")
    target = {
        "targets": [f"127.0.0.1:{live_server.metrics_port}"],
        "labels": {"namespace": NAMESPACE, "pod": POD},
    }
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{"job_name": "rmserve", "static_configs": [target]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while not (listening := LISTENING.search(log.read_text())):
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < end, f"prometheus never listened:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        url = f"http://{listening.group(1)}"
        while True:
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < end, f"prometheus not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def loaded(prometheus: Prometheus, live_server: LiveServer) -> Prometheus:
    """Prometheus after a few seconds of load spread over several 1 s scrapes."""
    up = prometheus.eventually('up{job="rmserve"} == 1')
    assert up[0]["metric"]["pod"] == POD
    end = time.monotonic() + 5
    while time.monotonic() < end:
        drive_load(live_server.target, rounds=2)
    # Prometheus has scraped the final counts: its latest sample equals the server's own total
    served = requests_total(live_server.scrape())
    deadline = time.monotonic() + 120  # "must not hang" bound
    while True:
        seen = prometheus.query('sum(rmserve_requests_total{job="rmserve"})')
        if seen and float(seen[0]["value"][1]) == served:
            return prometheus
        assert time.monotonic() < deadline, f"prometheus never saw {served} requests: {seen}"
        time.sleep(0.2)


def requests_total(exposition: str) -> float:
    """Sum of rmserve_requests_total in a /metrics page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "rmserve_requests_total"
    )


def test_request_rate_is_non_zero(loaded: Prometheus) -> None:
    result = loaded.query(f'sum(rate(rmserve_requests_total{{code="OK"}}[{WINDOW}]))')
    assert float(result[0]["value"][1]) > 0
    pairs = loaded.query(f"sum(rate(rmserve_pairs_total[{WINDOW}]))")
    assert float(pairs[0]["value"][1]) > 0


def test_p99_latency_is_finite_and_positive(loaded: Prometheus) -> None:
    result = loaded.query(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(rmserve_request_duration_seconds_bucket[{WINDOW}])))"
    )
    p99 = float(result[0]["value"][1])
    assert math.isfinite(p99) and p99 > 0, p99


def test_hpa_metric_is_served_through_the_adapter_rule(loaded: Prometheus) -> None:
    rule = adapter_rule()
    series = adapter_series_for(hpa_metric_name(render(VARIANTS["gpu"])))
    # discovery: the adapter lists series matching seriesQuery, with namespace and pod labels
    found = loaded.api("series", **{"match[]": rule["seriesQuery"]})
    assert {(s["__name__"], s["namespace"], s["pod"]) for s in found} == {(series, NAMESPACE, POD)}
    # the value the HPA reads: metricsQuery filled in as prometheus-adapter does for one pod
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{POD}"')
        .replace("<<.GroupBy>>", "pod")
    )
    result = loaded.query(query)
    assert [r["metric"] for r in result] == [{"pod": POD}], result
    value = float(result[0]["value"][1])
    assert math.isfinite(value) and value >= 0


def test_alert_rules_evaluate_without_errors(loaded: Prometheus) -> None:
    end = time.monotonic() + 20
    while True:
        rules = [r for g in loaded.api("rules")["groups"] for r in g["rules"]]
        assert rules, "no rules loaded"
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
        assert not bad, bad
        if all(r["health"] == "ok" for r in rules):
            break
        assert time.monotonic() < end, [(r["name"], r["health"]) for r in rules]
        time.sleep(0.5)
    p99 = loaded.eventually("namespace:rmserve_request_duration_seconds:p99_5m")
    assert p99[0]["metric"]["namespace"] == NAMESPACE
    firing = loaded.query('ALERTS{alertstate="firing"}')
    assert not [a for a in firing if a["metric"]["alertname"] != "RmserveCpuFallback"], firing


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries())
def test_dashboard_query_returns_data(loaded: Prometheus, panel: str, expr: str) -> None:
    promql = expr.replace("$namespace", NAMESPACE).replace("$__rate_interval", WINDOW)
    result = loaded.query(promql)
    assert result, f"{panel}: no data for {promql}"
    values = [float(r["value"][1]) for r in result]
    assert all(not math.isnan(v) for v in values), (panel, promql, values)
