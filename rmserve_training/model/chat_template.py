"""A Hugging Face chat template -> rmserve's ``ChatTemplate``, proven on probe conversations.

The template is rendered with sentinel messages and cut into the text around them. What a
template does to the messages themselves (Jinja's ``trim``, Qwen3's ``lstrip('\\n')`` and its
lifting of ``<think>`` reasoning) is found by trying every ``ChatTemplate`` that rmserve can
replay and keeping the one that renders each probe conversation exactly as Jinja does. A
template that no such model reproduces is refused, naming the probe it renders differently.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any, get_args

from rmserve.artifact.manifest import ChatTemplate, ReasoningSplit, Strip
from rmserve.text.chat_render import render

log = logging.getLogger(__name__)

PROMPT_SENTINEL = "RMSERVEPROMPTSENTINEL"
RESPONSE_SENTINEL = "RMSERVERESPONSESENTINEL"
THINK_START, THINK_END = "<think>", "</think>"
EDGES = "\n\n \t\n"
PROBES: tuple[tuple[str, str], ...] = (
    ("", ""),
    (EDGES + "prompt" + EDGES[::-1], EDGES + "response" + EDGES[::-1]),
    ("  two  spaces ", " one leading space"),
    ("a\n\nb", "c\n\nd\n"),
    ("\u3000wide space", "no-break space\u00a0"),
    ("{{ braces }} {% raw %}", "{# not a comment #}"),
    ("What is 2+2?", "<think>\nadd them\n</think>\n\n4"),
    ("q", "plan" + THINK_END + "answer"),
    ("q", "\n<think>\n\nx\n\n</think>\n\ny\n"),
    ("q", "a</think>b</think>c"),
    ("q", "<think>a<think>b</think>c"),
    ("a long prompt, " * 40, "a long response. " * 60),
)

# Conversations a template may render apart that rmserve renders like any other: warned at import.
KNOWN_GAPS: tuple[tuple[str, str], ...] = (
    ("<tool_response>result</tool_response>", "answer"),  # Qwen3: no think block after a tool
)


class ChatTemplateError(Exception):
    """The chat template cannot be replayed exactly; the message says where it differs."""


def conversation(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def tokenizer_adds_bos(hf_tokenizer: Any) -> bool:
    bos = hf_tokenizer.bos_token_id
    return bos is not None and bos in hf_tokenizer("", add_special_tokens=True)["input_ids"]


def hf_render(hf_tokenizer: Any, prompt: str, response: str) -> str:
    """The text a reward model's training code tokenises (Skywork-Reward-V2's recipe):
    ``apply_chat_template(conv, tokenize=False)`` less a leading BOS that the tokenizer adds
    again itself."""
    text: str = hf_tokenizer.apply_chat_template(conversation(prompt, response), tokenize=False)
    bos = hf_tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer_adds_bos(hf_tokenizer):
        text = text[len(bos) :]
    return text


def _pieces(text: str) -> tuple[str, str, str]:
    if text.count(PROMPT_SENTINEL) != 1 or text.count(RESPONSE_SENTINEL) != 1:
        raise ChatTemplateError(
            f"chat template does not render each message exactly once: {text!r}"
        )
    prefix, rest = text.split(PROMPT_SENTINEL)
    separator, suffix = rest.split(RESPONSE_SENTINEL)
    return prefix, separator, suffix


def _reasoning_rule(hf_tokenizer: Any, separator: str) -> ReasoningSplit | None:
    """If a response holding ``</think>`` renders as ``reasoning + close + answer`` where the
    separator ends with ``close``, the template lifts reasoning out (Qwen3)."""
    probe = "REASONING" + THINK_END + RESPONSE_SENTINEL
    text = hf_render(hf_tokenizer, PROMPT_SENTINEL, probe)
    if "REASONING" not in text or text.count(RESPONSE_SENTINEL) != 1:
        return None
    close = text.split("REASONING", 1)[1].split(RESPONSE_SENTINEL, 1)[0]
    if not close or close == THINK_END or not separator.endswith(close):
        return None
    return ReasoningSplit(start=THINK_START, end=THINK_END, close=close)


def _candidates(
    prefix: str, separator: str, suffix: str, reasoning: ReasoningSplit | None
) -> Iterator[ChatTemplate]:
    """Every replayable model of the template, fewest transformations first."""
    strips: tuple[Strip, ...] = get_args(Strip)
    rules = (None, reasoning) if reasoning else (None,)
    combos = sorted(itertools.product(strips, repeat=4), key=lambda c: sum(s != "none" for s in c))
    for rule in rules:
        for p_left, p_right, r_left, r_right in combos:
            yield ChatTemplate(
                prefix=prefix, separator=separator, suffix=suffix,
                prompt_lstrip=p_left, prompt_rstrip=p_right,
                response_lstrip=r_left, response_rstrip=r_right, reasoning=rule,
            )  # fmt: skip


def _probe_texts(hf_tokenizer: Any) -> list[tuple[tuple[str, str], str]]:
    rendered = []
    for prompt, response in PROBES:
        try:
            rendered.append(((prompt, response), hf_render(hf_tokenizer, prompt, response)))
        except Exception as e:  # Jinja's raise_exception and template errors alike
            raise ChatTemplateError(
                f"chat template fails on user {prompt!r} / assistant {response!r}: {e}"
            ) from e
    return rendered


def check_renders_like_hf(
    template: ChatTemplate, hf_tokenizer: Any, texts: Sequence[tuple[str, str]]
) -> None:
    """Raise unless rmserve renders each conversation as the tokenizer's template does."""
    for prompt, response in texts:
        expected = hf_render(hf_tokenizer, prompt, response)
        ours = render(template, prompt, response).text
        if ours != expected:
            raise ChatTemplateError(
                f"chat template renders user {prompt!r} / assistant {response!r} as "
                f"{expected!r}, which depends on the messages in a way rmserve cannot replay "
                f"(rmserve renders {ours!r})"
            )


def _warn_known_gaps(template: ChatTemplate, hf_tokenizer: Any) -> None:
    for prompt, response in KNOWN_GAPS:
        expected = hf_render(hf_tokenizer, prompt, response)
        ours = render(template, prompt, response).text
        if ours != expected:
            log.warning(
                "the chat template renders user %r / assistant %r as %r; rmserve renders such "
                "pairs as %r (scores for them may differ from the model's training)",
                prompt, response, expected, ours,
            )  # fmt: skip


def analyse_chat_template(hf_tokenizer: Any) -> ChatTemplate:
    """The ``ChatTemplate`` that renders every probe exactly as the tokenizer's template."""
    text = hf_render(hf_tokenizer, PROMPT_SENTINEL, RESPONSE_SENTINEL)
    prefix, separator, suffix = _pieces(text)
    if "strftime_now" in (hf_tokenizer.chat_template or ""):
        log.warning(
            "the chat template renders today's date; rmserve keeps the one rendered now (%r)",
            prefix,
        )
    reasoning = _reasoning_rule(hf_tokenizer, separator)
    probes = _probe_texts(hf_tokenizer)
    first_miss: tuple[tuple[str, str], str, str] | None = None
    for candidate in _candidates(prefix, separator, suffix, reasoning):
        miss = next(
            (
                (conv, expected, ours)
                for conv, expected in probes
                if (ours := render(candidate, *conv).text) != expected
            ),
            None,
        )
        if miss is None:
            _warn_known_gaps(candidate, hf_tokenizer)
            return candidate
        first_miss = first_miss or miss
    assert first_miss is not None
    (prompt, response), expected, ours = first_miss
    raise ChatTemplateError(
        f"chat template renders user {prompt!r} / assistant {response!r} as {expected!r}, "
        f"which depends on the messages in a way rmserve cannot replay (rmserve renders "
        f"{ours!r} with no stripping)"
    )
