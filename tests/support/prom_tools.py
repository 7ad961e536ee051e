"""Finding Debian's `prometheus` / `promtool`: scripts/test.sh installs them (through
scripts/test_tools.sh); a test that needs a missing one fails with the install hint, never
skips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s_render import load_yaml_documents

K8S = Path(__file__).resolve().parents[2] / "k8s"
RULE = K8S / "base" / "prometheusrule.yaml"
DASHBOARD = K8S / "monitoring" / "grafana-dashboard.json"
INSTALL_HINT = "bash scripts/test_tools.sh  (Debian's prometheus package, with promtool)"


def require_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"`{name}` is not installed; install it with: {INSTALL_HINT}")


def rule_groups() -> list[dict[str, Any]]:
    (rule,) = load_yaml_documents(RULE)
    assert rule["kind"] == "PrometheusRule"
    return list(rule["spec"]["groups"])


def write_rules(path: Path, *, annotations: bool = True) -> Path:
    groups = rule_groups()
    if not annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
