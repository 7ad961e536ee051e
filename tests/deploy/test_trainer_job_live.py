"""The example RL trainer Job's exact command line, run against a live server: only its target
(the headless Service's DNS name inside a cluster) is pointed at the local server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.k8s_render import PLAIN_MANIFESTS, find, load_yaml_documents
from tests.support.live import LiveServer


def test_trainer_job_command_scores_through_a_dns_target(live_server: LiveServer) -> None:
    (path,) = PLAIN_MANIFESTS
    container = find(load_yaml_documents(path), "Job")["spec"]["template"]["spec"]["containers"][0]
    args = list(container["args"])
    at = args.index("--target") + 1
    assert args[at].startswith("dns:///")
    args[at] = f"dns:///{live_server.target}"
    assert container["command"] == ["rmserve"]
    result = subprocess.run(
        [sys.executable, "-m", "rmserve.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout.splitlines()[-1])
    assert isinstance(reply["reward"], float) and reply["num_tokens"] > 0
