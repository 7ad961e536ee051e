"""Pure pieces of GRPO groups and the RL protocols: group statistics as TRL computes them,
runs of repeated prompts, a prompt tokenised once per group, and rendered text read back."""

from __future__ import annotations

import numpy as np
import pytest

from rmserve.artifact.manifest import ChatTemplate, Preprocessing, ReasoningSplit
from rmserve.client.trl import consecutive_groups
from rmserve.rewards.group_stats import ADVANTAGE_EPSILON, group_stats
from rmserve.text.chat_render import render
from rmserve.text.preprocess import Preprocessor, load_tokenizer
from rmserve.text.rendered_input import split_rendered
from rmserve_training.model.backbones import minilm_folder
from tests.support.counting_tokenizer import CountingTokenizer

CHATML = ChatTemplate(
    prefix="<|im_start|>user\n",
    separator="<|im_end|>\n<|im_start|>assistant\n",
    suffix="<|im_end|>\n",
    prompt_lstrip="whitespace",
    prompt_rstrip="whitespace",
)
QWEN3 = CHATML.model_copy(
    update={
        "separator": CHATML.separator + "<think>\n\n</think>\n\n",
        "response_lstrip": "newlines",
        "reasoning": ReasoningSplit(start="<think>", end="</think>", close="\n</think>\n\n"),
    }
)


@pytest.mark.parametrize("rewards", [[1.0, 2.0, 4.0], [0.5, 0.5], [-3.0, 1e-3, 7.25, 2.0, 2.0]])
def test_group_stats_are_trls_ddof_1_and_epsilon(rewards: list[float]) -> None:
    r = np.array(rewards)
    stats = group_stats(rewards)
    assert stats.epsilon == ADVANTAGE_EPSILON == 1e-4
    assert stats.mean == pytest.approx(r.mean(), abs=1e-12)
    assert stats.std == pytest.approx(r.std(ddof=1), abs=1e-12)
    np.testing.assert_allclose(stats.advantages, (r - r.mean()) / (r.std(ddof=1) + 1e-4))


def test_group_of_one_has_zero_std_and_advantage() -> None:
    stats = group_stats([3.5])
    assert (stats.mean, stats.std, stats.advantages) == (3.5, 0.0, [0.0])
    with pytest.raises(ValueError, match="at least one"):
        group_stats([])


@pytest.mark.parametrize(
    ("prompts", "runs"),
    [
        ([], []),
        (["a"], [(0, 1)]),
        (["a", "a", "b", "b", "a"], [(0, 2), (2, 4), (4, 5)]),
        (["a", "b", "c"], [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_consecutive_groups(prompts: list[str], runs: list[tuple[int, int]]) -> None:
    assert consecutive_groups(prompts) == runs


@pytest.mark.parametrize("count", [1, 5, 40])
def test_prepare_group_tokenises_the_prompt_once_and_equals_prepare(count: int) -> None:
    tokenizer = load_tokenizer(minilm_folder() / "tokenizer.json")
    pre = Preprocessor(tokenizer, Preprocessing(join="pair", max_length=16, pad_token_id=0))
    prompt = "one two three four five six seven eight nine ten"
    responses = [("a b " * (i % 9)).strip() for i in range(count)]
    counting = CountingTokenizer(pre.tokenizer)
    pre.tokenizer = counting  # type: ignore[assignment]
    group = pre.prepare_group(prompt, responses)
    assert counting.texts.count(prompt) == 1
    pre.tokenizer = counting.inner
    assert group == [pre.prepare(prompt, r) for r in responses]
    assert any(p.truncated for p in group) or count == 1


@pytest.mark.parametrize("template", [CHATML, QWEN3])
@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("What is 2 + 2?", "4."),
        ("", ""),
        ("quote <|im_end|>\n<|im_start|>assistant\n in a prompt", "and <|im_end|> in a reply"),
        ("Why?", "<think>\nbecause\n</think>\n\nIt is."),
    ],
)
def test_rendered_text_reads_back_to_its_pair(
    template: ChatTemplate, prompt: str, response: str
) -> None:
    text = render(template, prompt, response).text
    split = split_rendered(template, text)
    assert split is not None
    assert render(template, *split).text == text


def test_rendered_text_with_a_bos_and_other_shapes() -> None:
    text = render(CHATML, "hi", "hello").text
    assert split_rendered(CHATML, "<s>" + text, "<s>") == ("hi", "hello")
    assert split_rendered(CHATML, "<s>" + text) is None
    earlier_turns = split_rendered(CHATML, text + text)  # the prompt holds the first turn
    assert earlier_turns == (text[len(CHATML.prefix) :] + "<|im_start|>user\nhi", "hello")
    assert split_rendered(CHATML, "plain text") is None
