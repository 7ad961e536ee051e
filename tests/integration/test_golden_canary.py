"""A drift injected into a serving model is caught by the golden canary. The engine is wrapped
through the Python API (the server's engine factory) so its rewards can be shifted after load:
the canary's next check in idle time sees it, readiness turns false (gRPC health and HTTP
/health), rewards are refused UNAVAILABLE, the gauges carry the figures, and the alert rule
fires on the scraped series in ``promtool test rules``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import yaml

from rmserve.artifact.folder import read_manifest
from rmserve.engine.session import Engine, LoadedArtifact
from rmserve.server.model_build import ort_engine
from rmserve.server.settings import ServerSettings
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2
from tests.support.harness import SERVICE, eventually, make_settings, serving
from tests.support.prom_tools import require_binary, write_rules

pytestmark = pytest.mark.asyncio(loop_scope="session")
SERVING, NOT_SERVING = 1, 2  # grpc.health.v1 statuses
SHIFT = 0.5


class ShiftingEngine:
    """The real engine, its rewards moved by ``shift`` (a stand-in for a swapped file, a bad
    driver or a faulty GPU); ``shift`` is 0 until a test sets it."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.shift = 0.0

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def device(self) -> str:
        return self.inner.device

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        return np.asarray(self.inner.score(pairs) + self.shift, dtype=np.float32)


def drift_ratio(scrape: str, model: str) -> float:
    found = re.search(rf'^rmserve_golden_drift_ratio\{{model="{model}"\}} (\S+)$', scrape, re.M)
    assert found, scrape
    return float(found.group(1))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        return str(reply.read().decode())


def alert_fires(
    folder: Path, model: str, before: float, after: float
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules``: the pod's scraped ratio, ``before`` for 5 minutes then ``after``,
    must leave RmserveGoldenDrift silent at 4m and firing at 7m (with the model's label)."""
    write_rules(folder / "rules.yaml", annotations=False)
    labels = f'namespace="rl",pod="rmserve-0",model="{model}"'
    cases = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f"rmserve_golden_drift_ratio{{{labels}}}",
                        "values": f"{before!r}x5 {after!r}x5",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "RmserveGoldenDrift", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "RmserveGoldenDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical", "namespace": "rl",
                                    "pod": "rmserve-0", "model": model,
                                }
                            }
                        ],
                    },
                ],
            }
        ],
    }  # fmt: skip
    (folder / "cases.yaml").write_text(yaml.safe_dump(cases))
    return subprocess.run(
        [require_binary("promtool"), "test", "rules", "cases.yaml"],
        capture_output=True, text=True, timeout=120, cwd=folder,
    )  # fmt: skip


async def test_a_drift_flips_readiness_and_fires_the_alert(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    built: list[ShiftingEngine] = []

    def factory(artifact: LoadedArtifact, settings: ServerSettings) -> Engine:
        built.append(ShiftingEngine(ort_engine(artifact, settings)))  # checked at load first
        return built[0]

    model = read_manifest(tiny_artifact).name
    settings = make_settings(tiny_artifact, golden_interval_seconds=0.05, http_port=0)
    async with serving(settings, factory) as h:
        checks = {r: lambda r=r: h.metric("rmserve_golden_checks_total", model=model, result=r)
                  for r in ("ok", "drift", "error")}  # fmt: skip
        await eventually(lambda: checks["ok"]() >= 1, "a canary check within tolerance")
        healthy = await asyncio.to_thread(scrape, h.server.metrics_port)
        assert drift_ratio(healthy, model) < 1
        assert h.metric("rmserve_golden_max_abs_diff", model=model) < 1e-4
        assert await h.health_status() == SERVING
        await h.stub.Score(reward_pb2.ScoreRequest(prompt="q", response="a"), timeout=30)

        built[0].shift = SHIFT
        await eventually(lambda: checks["drift"]() == 1, "the canary to see the drift")
        assert await h.health_status() == NOT_SERVING
        assert await h.health_status(SERVICE) == NOT_SERVING
        url = f"http://127.0.0.1:{h.server.http_port}/health"
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            assert reply.status == 503 and json.loads(await reply.text())["status"] == "NOT_SERVING"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.stub.Score(reward_pb2.ScoreRequest(prompt="q", response="a"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "golden pairs drifted" in (caught.value.details() or "")
        assert h.metric("rmserve_golden_max_abs_diff", model=model) == pytest.approx(
            SHIFT, abs=1e-3
        )
        drifted = await asyncio.to_thread(scrape, h.server.metrics_port)
        assert drift_ratio(drifted, model) == pytest.approx(SHIFT / 1e-4, rel=1e-2)
        watch = h.server.golden
        assert watch is not None and watch.canary is not None
        ended = watch.canary.checks
        await eventually(
            lambda: watch._task is not None and watch._task.done(), "the canary to end"
        )
        assert watch.canary.checks == ended and checks["error"]() == 0  # drift latches

    result = alert_fires(tmp_path, model, drift_ratio(healthy, model), drift_ratio(drifted, model))
    assert result.returncode == 0, result.stdout + result.stderr
    silent = alert_fires(tmp_path, model, drift_ratio(healthy, model), drift_ratio(healthy, model))
    assert silent.returncode != 0 and "RmserveGoldenDrift" in silent.stdout + silent.stderr


async def test_each_served_model_has_its_canary_and_any_drift_turns_readiness_off(
    tiny_artifact: Path, qwen_artifact: Path
) -> None:
    """Two models, each checked by its own canary under the name it is served by; a drift of the
    second one (not the default) turns the whole server's readiness off and refuses that model,
    while the default model's canary still finds it within tolerance."""
    built: list[ShiftingEngine] = []

    def factory(artifact: LoadedArtifact, settings: ServerSettings) -> Engine:
        built.append(ShiftingEngine(ort_engine(artifact, settings)))
        return built[-1]

    settings = make_settings(
        tiny_artifact, models={"second": qwen_artifact}, golden_interval_seconds=0.05
    )
    async with serving(settings, factory) as h:
        default = read_manifest(tiny_artifact).name

        def checks(model: str, result: str) -> float:
            return h.metric("rmserve_golden_checks_total", model=model, result=result)

        assert set(h.server.goldens) == {default, "second"}
        await eventually(
            lambda: checks(default, "ok") >= 1 and checks("second", "ok") >= 1,
            "a canary check of each model",
        )
        assert h.metric("rmserve_golden_checks_total", model="qwen", result="ok") == 0
        assert await h.health_status() == SERVING

        assert len(built) == 2  # built in the order served: the default first
        built[1].shift = SHIFT
        await eventually(lambda: checks("second", "drift") == 1, "the second model's drift")
        assert await h.health_status() == NOT_SERVING
        assert await h.health_status(SERVICE) == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            request = reward_pb2.ScoreRequest(prompt="q", response="a", model="second")
            await h.stub.Score(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        ok = checks(default, "ok")
        await eventually(lambda: checks(default, "ok") > ok, "the default model checked on")
        assert checks(default, "drift") == 0
