"""Chat messages -> text, in the Anthropic HH-RLHF convention.

A conversation renders as ``\\n\\nHuman: …\\n\\nAssistant: …`` (``\\n\\nSystem: …`` for system
messages). Training and the serving client both render TRL conversational inputs with these
functions, so a conversation and its HH-text spelling give identical (prompt, response) strings:

    render_prompt(prompt) + " " + render_response(response) == render_messages(prompt + response)

The single space after the prompt's trailing ``\\n\\nAssistant:`` marker belongs to neither side:
the prompt ends with the bare marker and the response starts at the first character of content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)
ROLE_LABELS: dict[str, str] = {"system": "System", "user": "Human", "assistant": "Assistant"}
ASSISTANT_MARKER = "\n\nAssistant:"


class MessageError(ValueError):
    """A message list is malformed. ``location`` is relative to the list, e.g. ``[1].role``."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.location = location
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def validate_messages(value: object) -> list[Message]:
    """Check a JSON-like list of ``{"role", "content"}`` objects; extra keys are ignored."""
    if isinstance(value, Message):
        raise MessageError("", "expected a list of messages, got a single Message")
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise MessageError("", f"expected a list of messages, got {_type_name(value)}")
    messages = []
    for index, item in enumerate(value):
        if isinstance(item, Message):
            messages.append(item)
            continue
        if not isinstance(item, Mapping):
            raise MessageError(f"[{index}]", f"expected an object, got {_type_name(item)}")
        if "role" not in item:
            raise MessageError(f"[{index}].role", "missing")
        if "content" not in item:
            raise MessageError(f"[{index}].content", "missing")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            allowed = ", ".join(repr(r) for r in ROLES)
            raise MessageError(f"[{index}].role", f"expected one of {allowed}, got {role!r}")
        if not isinstance(content, str):
            raise MessageError(
                f"[{index}].content", f"expected a string, got {_type_name(content)}"
            )
        messages.append(Message(role, content))
    return messages


MessagesLike = Sequence[Mapping[str, object] | Message]


def render_messages(messages: MessagesLike) -> str:
    """``[{"role": "user", "content": "hi"}]`` -> ``"\\n\\nHuman: hi"``."""
    return "".join(f"\n\n{ROLE_LABELS[m.role]}: {m.content}" for m in validate_messages(messages))


def render_prompt(messages: MessagesLike) -> str:
    """The rendered conversation followed by the ``\\n\\nAssistant:`` generation marker."""
    return render_messages(messages) + ASSISTANT_MARKER


def render_response(messages: MessagesLike) -> str:
    """The reply that follows ``render_prompt``: the first message must be the assistant's.

    An empty list is the empty response.
    """
    checked = validate_messages(messages)
    if not checked:
        return ""
    first, rest = checked[0], checked[1:]
    if first.role != "assistant":
        raise MessageError(
            "[0].role", f"a response must start with 'assistant', got {first.role!r}"
        )
    return first.content + render_messages(rest)


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH dialogues that share a prefix into (prompt, chosen, rejected).

    The prompt is the shared prefix up to and including its last ``\\n\\nAssistant:`` marker, so
    it never ends mid-word; one space right after that marker is dropped from both responses.
    Without a shared assistant marker the prompt is empty and the texts are returned whole.
    """
    shared = 0
    limit = min(len(chosen), len(rejected))
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    cut = chosen.rfind(ASSISTANT_MARKER, 0, shared)
    if cut < 0:
        return "", chosen, rejected
    end = cut + len(ASSISTANT_MARKER)
    return chosen[:end], _drop_one_space(chosen[end:]), _drop_one_space(rejected[end:])


def _drop_one_space(text: str) -> str:
    return text[1:] if text.startswith(" ") else text
