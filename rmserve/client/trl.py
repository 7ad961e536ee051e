"""Trainer inputs → (prompt, response) text pairs, for TRL-style ``reward_funcs``.

TRL passes ``prompts`` and ``completions`` either as plain strings or, for conversational
datasets, as lists of ``{"role", "content"}`` messages. Conversations are rendered with
``rmserve.text.conversation`` exactly as the training data was, so a conversation scores the same as
its HH-text spelling.

GRPO passes each prompt ``num_generations`` times in a row; ``consecutive_groups`` finds those
runs, and the adapters score each run with one ``ScoreGroup`` call (the prompt tokenised once)
when there are any repeats, else all pairs in one chunked ``ScoreBatch``. Rewards are the same
either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from rmserve.text.conversation import render_prompt, render_response

TrlInput = Union[str, Sequence[Mapping[str, object]]]  # noqa: UP007 (a runtime alias)


def to_pairs(
    prompts: Sequence[TrlInput], completions: Sequence[TrlInput]
) -> tuple[list[str], list[str]]:
    if len(prompts) != len(completions):
        raise ValueError(
            f"got {len(prompts)} prompts and {len(completions)} completions; TRL passes one "
            "prompt per completion"
        )
    texts_p = [p if isinstance(p, str) else render_prompt(p) for p in prompts]
    texts_c = [c if isinstance(c, str) else render_response(c) for c in completions]
    return texts_p, texts_c


def consecutive_groups(prompts: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each run of equal consecutive prompts, in order."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] != prompts[start]:
            runs.append((start, i))
            start = i
    return runs


def has_repeats(runs: Sequence[tuple[int, int]], count: int) -> bool:
    return len(runs) < count
