"""A chat-template conversation tokenised in two parts, so a group's prompt is tokenised once.

A template artifact tokenises the whole rendered conversation in one piece (pieces tokenised
apart can merge differently at their edges). But a tokenizer matches its added tokens
(``<|im_start|>``, ``<a>``) before it normalises or pre-tokenises anything, so text on either
side of one never merges with the other side: cut the rendering just before an added token
in the separator and the two parts' tokens, put together, are the whole rendering's tokens.

    prefix + prompt + separator[:at]  |  separator[at:] + response + suffix
    \\______ prompt part: once ______/    \\________ response part: per response ________/

``TemplateSplit.find`` only proposes the cut; ``Preprocessor`` keeps it only where the
assembled parts equal the whole rendering on its check texts (as ``PairLayout`` is read from
probe texts) and otherwise tokenises every conversation whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer

from rmserve.artifact.manifest import ChatTemplate
from rmserve.text.chat_render import render, strip

PROBES = ("alpha", "alpha beta gamma delta")


@dataclass(frozen=True, slots=True)
class SequenceLayout:
    """The special tokens the post-processor puts around one text (a BOS, say)."""

    before: tuple[int, ...]
    before_types: tuple[int, ...]
    after: tuple[int, ...]
    after_types: tuple[int, ...]
    type_id: int  # the text's tokens' type id

    @classmethod
    def read(cls, tokenizer: Tokenizer) -> SequenceLayout | None:
        """The layout, or None if the post-processor is not fixed tokens around the text
        (checked on probe texts of different lengths)."""
        layouts = set()
        for probe in PROBES:
            plain = tokenizer.encode(probe, add_special_tokens=False)
            full = tokenizer.encode(probe, add_special_tokens=True)
            texts = [i for i, special in enumerate(full.special_tokens_mask) if not special]
            if len(texts) != len(plain.ids) or not texts:
                return None
            first, last = texts[0], texts[-1] + 1
            if len({full.type_ids[i] for i in texts}) != 1:
                return None
            layout = cls(
                tuple(full.ids[:first]),
                tuple(full.type_ids[:first]),
                tuple(full.ids[last:]),
                tuple(full.type_ids[last:]),
                full.type_ids[first],
            )
            if layout.assemble(plain.ids) != (full.ids, full.type_ids):
                return None
            layouts.add(layout)
        return layouts.pop() if len(layouts) == 1 else None

    def assemble(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(input ids, token type ids) of one text, special tokens included."""
        return (
            [*self.before, *ids, *self.after],
            [*self.before_types, *[self.type_id] * len(ids), *self.after_types],
        )


@dataclass(frozen=True, slots=True)
class Part:
    """One part's text and where its message (prompt or response) sits in it."""

    text: str
    span: tuple[int, int]


@dataclass(frozen=True, slots=True)
class TemplateSplit:
    template: ChatTemplate
    at: int  # characters of the separator that go with the prompt; an added token starts there
    layout: SequenceLayout

    @classmethod
    def find(cls, tokenizer: Tokenizer, template: ChatTemplate) -> TemplateSplit | None:
        """A proposed cut: before the last added token in the part of the separator that every
        rendering has. None if there is none or the post-processor is no fixed layout."""
        common = template.separator
        if template.reasoning is not None:
            common = common[: len(common) - len(template.reasoning.close)]
        added = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.content]
        at = max((common.rfind(content) for content in added), default=-1)
        layout = SequenceLayout.read(tokenizer)
        if at < 0 or layout is None:
            return None
        return cls(template, at, layout)

    def prompt_part(self, prompt: str) -> Part:
        """The rendering's start, up to the cut: the same for every response."""
        template = self.template
        prompt = strip(prompt, template.prompt_lstrip, template.prompt_rstrip)
        start = len(template.prefix)
        return Part(
            template.prefix + prompt + template.separator[: self.at], (start, start + len(prompt))
        )

    def response_part(self, response: str) -> Part:
        """The rendering's rest, from the cut: the same for every prompt."""
        rendered = render(self.template, "", response)
        cut = len(self.template.prefix) + self.at
        start, end = rendered.response
        return Part(rendered.text[cut:], (start - cut, end - cut))


@dataclass(frozen=True, slots=True)
class EncodedPart:
    """A part's token ids and the positions of its message's tokens (a token belongs to the
    message when its characters overlap the message's span, as ``Preprocessor`` cuts a whole
    rendering)."""

    ids: np.ndarray  # int64
    message: np.ndarray  # intp, ascending

    @classmethod
    def of(cls, part: Part, encoding: Encoding) -> EncodedPart:
        offsets = np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        start, end = part.span
        inside = (offsets[:, 0] < end) & (offsets[:, 1] > start)
        return cls(np.array(encoding.ids, dtype=np.int64), np.flatnonzero(inside))


def assemble(
    layout: SequenceLayout, prompt: EncodedPart, response: EncodedPart, max_length: int
) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """(input ids, type ids, truncated, response_truncated) of one conversation from its two
    parts, cut as a whole rendering is: the prompt's tokens from the left; if the response
    alone does not fit, the prompt dropped and the response's tokens cut from the right.
    Template and special tokens always stay."""
    specials = len(layout.before) + len(layout.after)
    total = specials + len(prompt.ids) + len(response.ids)
    prompt_ids, response_ids = prompt.ids, response.ids
    truncated = response_truncated = False
    if total > max_length:
        in_prompt, in_response = len(prompt.message), len(response.message)
        budget = max_length - (total - in_prompt - in_response)
        response_truncated = in_response > budget
        if response_truncated:
            prompt_ids = np.delete(prompt_ids, prompt.message)
            response_ids = np.delete(response_ids, response.message[max(budget, 0) :])
        else:
            prompt_ids = np.delete(prompt_ids, prompt.message[: in_prompt + in_response - budget])
        kept = specials + len(prompt_ids) + len(response_ids)
        if kept > max_length:
            raise ValueError(
                f"{kept} tokens remain after cutting prompt and response to fit "
                f"max_length={max_length}: the template alone does not fit"
            )
        truncated = True
    text = len(prompt_ids) + len(response_ids)
    ids = np.concatenate(
        [
            np.array(layout.before, np.int64),
            prompt_ids,
            response_ids,
            np.array(layout.after, np.int64),
        ]
    )
    types = np.concatenate(
        [
            np.array(layout.before_types, np.int64),
            np.full(text, layout.type_id, np.int64),
            np.array(layout.after_types, np.int64),
        ]
    )
    return ids, types, truncated, response_truncated
