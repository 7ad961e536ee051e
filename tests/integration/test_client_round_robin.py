"""A comma list of endpoints is balanced per call (round_robin) across every server."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.support.client_tools import FACES, open_client
from tests.support.harness import Harness, make_settings, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")


def score_calls(harness: Harness) -> float:
    return harness.metric("rmserve_requests_total", method="Score", code="OK")


@pytest.mark.parametrize("face", FACES)
async def test_round_robin_spreads_calls_over_three_servers(face: str, tiny_artifact: Path) -> None:
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(serving(make_settings(tiny_artifact))) for _ in range(3)
        ]
        target = ",".join(f"127.0.0.1:{h.server.port}" for h in servers)
        async with open_client(face, target) as client:
            # Connecting is per endpoint: call until every subchannel has served (bounded).
            for i in range(600):
                await client.score_one(f"warm {i}", "a")
                if all(score_calls(h) > 0 for h in servers):
                    break
            assert all(score_calls(h) > 0 for h in servers), [score_calls(h) for h in servers]
            before = [score_calls(h) for h in servers]
            for i in range(30):
                await client.score_one(f"q {i}", "a")
        spread = [score_calls(h) - b for h, b in zip(servers, before, strict=True)]
    assert sum(spread) == 30
    assert min(spread) >= 5, spread  # round robin sends ~10 to each
