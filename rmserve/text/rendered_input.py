"""A conversation already rendered with the reward model's chat template, read back into the
(prompt, response) it was rendered from, so it is scored (and truncated) exactly as ``Score``
scores that pair.

verl renders ``[..., user, assistant]`` with the RM's own tokenizer
(``apply_chat_template(chat, tokenize=False)``) and strips a leading BOS text, because vLLM's
tokenizer adds the BOS itself. A text is accepted when ``rmserve.text.chat_render.render`` of the
prompt and response read from it gives back exactly the same text (after the same leading-BOS
strip) and the response holds no further assistant turn (the template's separator). Earlier
turns of a longer conversation are then part of the prompt text, so they are the first cut when
it is too long, as for any prompt. Anything else (a different system prompt, another template,
plain text) is not a conversation this artifact can score, and ``None`` is returned.
"""

from __future__ import annotations

from rmserve.artifact.manifest import ChatTemplate
from rmserve.text.chat_render import render

# Separator occurrences tried per text (a response may quote the template's own markers).
MAX_SPLITS = 8


def _separators(template: ChatTemplate) -> list[str]:
    """The text between prompt and response: the separator, or (reasoning templates) the
    separator without its empty-reasoning tail when the response brings its own reasoning."""
    seps = [template.separator]
    rule = template.reasoning
    if rule is not None:
        seps.append(template.separator[: len(template.separator) - len(rule.close)])
    return seps


def split_rendered(template: ChatTemplate, text: str, bos_text: str = "") -> tuple[str, str] | None:
    """(prompt, response) with ``render(template, prompt, response).text == text``, or None."""
    if bos_text and text.startswith(bos_text) and not template.prefix.startswith(bos_text):
        text = text[len(bos_text) :]
    if not text.startswith(template.prefix) or not text.endswith(template.suffix):
        return None
    inner = text[len(template.prefix) : len(text) - len(template.suffix)]
    for sep in _separators(template):
        if not sep:
            continue
        at = inner.find(sep)
        for _ in range(MAX_SPLITS):
            if at < 0:
                break
            prompt, response = inner[:at], inner[at + len(sep) :]
            later_turn = template.separator in response  # another assistant turn follows
            if not later_turn and render(template, prompt, response).text == text:
                return prompt, response
            at = inner.find(sep, at + 1)
    return None
