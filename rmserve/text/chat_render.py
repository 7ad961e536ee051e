"""A chat template rendered once at import, replayed per pair at serve time without Jinja.

``render`` gives the text the reward model saw in training for [user: prompt, assistant:
response] and where prompt and response sit in it (character spans), so truncation can cut
the right tokens after the whole text is tokenised in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmserve.artifact.manifest import ChatTemplate, ReasoningSplit, Strip


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    prompt: tuple[int, int]
    response: tuple[int, int]


def strip(text: str, left: Strip, right: Strip) -> str:
    if left == "whitespace":
        text = text.lstrip()
    elif left == "newlines":
        text = text.lstrip("\n")
    if right == "whitespace":
        text = text.rstrip()
    elif right == "newlines":
        text = text.rstrip("\n")
    return text


def split_reasoning(response: str, rule: ReasoningSplit) -> tuple[str, str]:
    """(reasoning, answer) as a Qwen3-style template splits an assistant message."""
    if rule.end not in response:
        return "", response
    reasoning = response.split(rule.end)[0].split(rule.start)[-1].strip("\n")
    return reasoning, response.split(rule.end)[-1]


def render(template: ChatTemplate, prompt: str, response: str) -> Rendered:
    prompt = strip(prompt, template.prompt_lstrip, template.prompt_rstrip)
    head = template.prefix + prompt
    prompt_span = (len(template.prefix), len(head))
    rule = template.reasoning
    reasoning, answer = ("", response) if rule is None else split_reasoning(response, rule)
    answer = strip(answer, template.response_lstrip, template.response_rstrip)
    if rule is not None and reasoning:
        head += template.separator[: len(template.separator) - len(rule.close)]
        body = reasoning + rule.close + answer
    else:  # the separator already ends with an empty reasoning block, if the template has one
        head += template.separator
        body = answer
    text = head + body + template.suffix
    return Rendered(text, prompt_span, (len(head), len(head) + len(body)))
