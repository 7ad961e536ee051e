"""A GRPO group: one ScoreGroup of N responses against N Score calls, in one run.

For the same prompt and N responses, each round times (in an order that alternates, so drift
on a shared machine hits both sides alike):

  1. N concurrent ``Score`` calls (what a trainer without groups sends; the server batches them)
  2. one ``ScoreGroup`` of the N responses (the prompt tokenised once, one request)

and records how far the group's rewards are from the Score rewards (float32 rounding of a
different batch composition; the token ids are the same, see
tests/integration/test_score_group.py). Reports the median seconds of each and
the ratio. The prompt is long (a few hundred words, cut to max_length by both paths), as GRPO
prompts with instructions and context usually are.

    .venv/bin/python bench/group.py --artifact A --out bench/results/group-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from rmserve import testing
from rmserve.client import AsyncRewardClient

_WORD_TEXT = (
    "the reward model scores each answer for helpful correct and polite replies while capital "
    "city river mountain number water light music garden paper window market teacher doctor"
)
WORDS = _WORD_TEXT.split()


def texts(count: int, words: int, offset: int) -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + k + offset) % len(WORDS)] for k in range(words))
        for i in range(count)
    ]


async def rounds(target: str, args: argparse.Namespace) -> dict[str, Any]:
    prompt = "Instructions and context: " + texts(1, args.prompt_words, 3)[0]
    responses = [f"#{i} {r}" for i, r in enumerate(texts(args.group_size, args.response_words, 0))]
    singles: list[float] = []
    groups: list[float] = []
    async with AsyncRewardClient(target, timeout=600.0) as client:

        async def score_calls() -> list[float]:
            return list(await asyncio.gather(*(client.score_one(prompt, r) for r in responses)))

        async def group_call() -> list[float]:
            return [float(x) for x in (await client.score_group(prompt, responses)).rewards]

        await score_calls()  # warm both paths and the channel
        await group_call()
        for i in range(args.rounds):
            order = [(score_calls, singles), (group_call, groups)]
            for call, times in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                rewards = await call()
                times.append(time.perf_counter() - start)
                if call is score_calls:
                    reference = rewards
                else:
                    group_rewards = rewards
        diff = max(abs(a - b) for a, b in zip(group_rewards, reference, strict=True))
    single_s, group_s = statistics.median(singles), statistics.median(groups)
    return {
        "group_size": args.group_size,
        "prompt_words": args.prompt_words,
        "response_words": args.response_words,
        "rounds": args.rounds,
        "score_calls_median_s": single_s,
        "score_group_median_s": group_s,
        "speedup": single_s / group_s,
        "score_calls_s": singles,
        "score_group_s": groups,
        # float32 rounding of different batch compositions; the tokens are the same
        "max_abs_reward_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("--response-words", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--note", default="", help="the machine's condition, for the record")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    server = testing.start_server(args.artifact, None, "--intra-op-threads", str(args.threads))
    try:
        server.wait_serving()
        result = asyncio.run(rounds(server.target, args))
    finally:
        server.kill()
    result |= {
        "artifact": str(args.artifact),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "note": args.note,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
