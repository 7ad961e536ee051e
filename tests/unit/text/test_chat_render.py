"""A chat template replayed without Jinja: message strips, Qwen3-style reasoning, spans."""

from __future__ import annotations

import pytest

from rmserve.artifact.manifest import ChatTemplate, ReasoningSplit, Strip
from rmserve.text.chat_render import render, split_reasoning, strip

CHATML = ChatTemplate(
    prefix="<|im_start|>user\n",
    separator="<|im_end|>\n<|im_start|>assistant\n",
    suffix="<|im_end|>\n",
)
THINK = ReasoningSplit(start="<think>", end="</think>", close="\n</think>\n\n")
QWEN3 = CHATML.model_copy(
    update={
        "separator": CHATML.separator + "<think>\n\n</think>\n\n",
        "response_lstrip": "newlines",
        "reasoning": THINK,
    }
)


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("none", "none", "\n \tx\t \n"),
        ("whitespace", "none", "x\t \n"),
        ("none", "whitespace", "\n \tx"),
        ("whitespace", "whitespace", "x"),
        ("newlines", "none", " \tx\t \n"),
        ("none", "newlines", "\n \tx\t "),
    ],
)
def test_strip(left: Strip, right: Strip, expected: str) -> None:
    assert strip("\n \tx\t \n", left, right) == expected


def test_whitespace_strip_is_jinjas_trim_on_unicode_spaces() -> None:
    assert strip("\u3000x\u00a0", "whitespace", "whitespace") == "x"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("no reasoning", ("", "no reasoning")),
        ("plan</think>answer", ("plan", "answer")),
        ("<think>\n\nplan\n</think>\n\nanswer", ("plan", "\n\nanswer")),
        ("a</think>b</think>c", ("a", "c")),  # between the first and last end: dropped
        ("<think>a<think>b</think>c", ("b", "c")),
    ],
)
def test_split_reasoning(response: str, expected: tuple[str, str]) -> None:
    assert split_reasoning(response, THINK) == expected


def test_render_spans_point_at_the_messages() -> None:
    rendered = render(CHATML, "what?", "this.")
    assert (
        rendered.text
        == "<|im_start|>user\nwhat?<|im_end|>\n<|im_start|>assistant\nthis.<|im_end|>\n"
    )
    assert rendered.text[slice(*rendered.prompt)] == "what?"
    assert rendered.text[slice(*rendered.response)] == "this."


def test_render_strips_messages_as_the_template_does() -> None:
    trimmed = CHATML.model_copy(
        update={"prompt_lstrip": "whitespace", "response_rstrip": "whitespace"}
    )
    rendered = render(trimmed, "  what? ", " this. \n")
    assert rendered.text[slice(*rendered.prompt)] == "what? "
    assert rendered.text[slice(*rendered.response)] == " this."


def test_qwen3_plain_answer_keeps_the_empty_think_block() -> None:
    rendered = render(QWEN3, "q", "\n\nanswer")
    assert rendered.text.endswith("assistant\n<think>\n\n</think>\n\nanswer<|im_end|>\n")
    assert rendered.text[slice(*rendered.response)] == "answer"


def test_qwen3_reasoning_is_lifted_into_the_think_block() -> None:
    rendered = render(QWEN3, "q", "<think>\nplan\n</think>\n\nanswer")
    assert rendered.text.endswith("assistant\n<think>\nplan\n</think>\n\nanswer<|im_end|>\n")
    assert rendered.text[slice(*rendered.response)] == "plan\n</think>\n\nanswer"


def test_reasoning_close_must_end_the_separator() -> None:
    with pytest.raises(ValueError, match=r"separator must end with reasoning\.close"):
        CHATML.model_validate({**CHATML.model_dump(), "reasoning": THINK.model_dump()})
