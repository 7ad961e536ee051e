from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from rmserve.text.conversation import (
    MessageError,
    render_messages,
    render_prompt,
    render_response,
    split_dialogue,
)
from rmserve.text.preference_data import DataError, PreferencePair, load_preferences

H, A = "\n\nHuman: ", "\n\nAssistant: "


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_rows(path: Path, rows: Sequence[object]) -> Path:
    return write_lines(path, [json.dumps(row) for row in rows])


def load_one(tmp_path: Path, row: object) -> PreferencePair:
    result = load_preferences(write_rows(tmp_path / "one.jsonl", [row]))
    assert result.skipped == 0
    assert len(result.pairs) == 1
    return result.pairs[0]


def test_explicit_format(tmp_path: Path) -> None:
    rows = [
        {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "5.", "source": "ignored"},
        {"prompt": "", "chosen": "", "rejected": "no"},
    ]
    result = load_preferences(write_rows(tmp_path / "train.jsonl", rows))
    assert result.pairs == [
        PreferencePair("What is 2 + 2?", "4.", "5.", 0.0),
        PreferencePair("", "", "no", 0.0),
    ]
    assert (result.skipped, result.skipped_lines) == (0, [])


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    row = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    result = load_preferences(write_lines(tmp_path / "t.jsonl", ["", row, "   ", row]))
    assert len(result.pairs) == 2


@pytest.mark.parametrize(
    ("margin", "expected"), [(1, 1.0), (0.25, 0.25), (-2.5, -2.5), (None, 0.0)]
)
def test_margin(tmp_path: Path, margin: object, expected: float) -> None:
    pair = load_one(tmp_path, {"prompt": "p", "chosen": "a", "rejected": "b", "margin": margin})
    assert pair.margin == expected
    assert isinstance(pair.margin, float)


def test_gzip_reads_like_plain(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "margin": i} for i in range(5)]
    plain = write_rows(tmp_path / "d.jsonl", rows)
    packed = tmp_path / "d.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert load_preferences(packed).pairs == load_preferences(plain).pairs
    assert len(load_preferences(packed).pairs) == 5


class TestHHSplit:
    def test_single_turn(self) -> None:
        chosen = f"{H}What is the capital of France?{A}Paris."
        rejected = f"{H}What is the capital of France?{A}Lyon, I think."
        assert split_dialogue(chosen, rejected) == (
            f"{H}What is the capital of France?\n\nAssistant:",
            "Paris.",
            "Lyon, I think.",
        )

    def test_shared_prefix_ending_mid_word_is_not_cut_there(self) -> None:
        chosen = f"{H}Name a city in Italy.{A}Parma is one."
        rejected = f"{H}Name a city in Italy.{A}Par"
        prompt, good, bad = split_dialogue(chosen, rejected)
        assert prompt == f"{H}Name a city in Italy.\n\nAssistant:"
        assert (good, bad) == ("Parma is one.", "Par")

    def test_multi_turn_uses_last_shared_assistant_marker(self) -> None:
        history = f"{H}Hi.{A}Hello! How can I help?{H}What is 3 + 4?"
        prompt, good, bad = split_dialogue(f"{history}{A}7.", f"{history}{A}9.")
        assert prompt == history + "\n\nAssistant:"
        assert (good, bad) == ("7.", "9.")

    def test_divergence_in_a_later_turn_keeps_the_rest_in_the_response(self) -> None:
        chosen = f"{H}Hi.{A}Hello!{H}Thanks."
        rejected = f"{H}Hi.{A}Hello!{H}Go away."
        prompt, good, bad = split_dialogue(chosen, rejected)
        assert prompt == f"{H}Hi.\n\nAssistant:"
        assert (good, bad) == (f"Hello!{H}Thanks.", f"Hello!{H}Go away.")

    def test_no_shared_turn_gives_empty_prompt_and_whole_texts(self) -> None:
        chosen, rejected = f"{H}Hi.{A}Hello!", f"{H}Hey.{A}What?"
        assert split_dialogue(chosen, rejected) == ("", chosen, rejected)

    def test_shared_prefix_ending_inside_the_marker_gives_empty_prompt(self) -> None:
        chosen, rejected = f"{H}Hi.{A}Hello!", f"{H}Hi.\n\nAssist"
        assert split_dialogue(chosen, rejected) == ("", chosen, rejected)

    def test_empty_response(self) -> None:
        prompt, good, bad = split_dialogue(f"{H}Hi.{A}Hello!", f"{H}Hi.\n\nAssistant:")
        assert (prompt, good, bad) == (f"{H}Hi.\n\nAssistant:", "Hello!", "")

    def test_implicit_file_format(self, tmp_path: Path) -> None:
        row = {"chosen": f"{H}Hi.{A}Hello!", "rejected": f"{H}Hi.{A}Go away.", "margin": 1.5}
        assert load_one(tmp_path, row) == PreferencePair(
            f"{H}Hi.\n\nAssistant:", "Hello!", "Go away.", 1.5
        )


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


class TestConversation:
    def test_render_messages(self) -> None:
        messages = [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello")]
        expected = "\n\nSystem: Be brief.\n\nHuman: Hi\n\nAssistant: Hello"
        assert render_messages(messages) == expected

    def test_render_prompt_appends_generation_marker(self) -> None:
        assert render_prompt([msg("user", "Hi")]) == "\n\nHuman: Hi\n\nAssistant:"

    def test_prompt_and_response_recompose_the_conversation(self) -> None:
        prompt = [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "2+2?")]
        response = [msg("assistant", "4"), msg("user", "Thanks")]
        recomposed = render_prompt(prompt) + " " + render_response(response)
        assert recomposed == render_messages(prompt + response)

    def test_empty_response_list_is_the_empty_response(self) -> None:
        assert render_response([]) == ""

    def test_response_must_start_with_assistant(self) -> None:
        with pytest.raises(MessageError, match=r"\[0\]\.role"):
            render_response([msg("user", "Hi")])

    @pytest.mark.parametrize(
        ("messages", "location", "reason"),
        [
            ("hello", "", "expected a list of messages, got str"),
            ([["user", "hi"]], "[0]", "expected an object, got list"),
            ([msg("user", "a"), {"content": "b"}], "[1].role", "missing"),
            ([{"role": "user"}], "[0].content", "missing"),
            ([msg("bot", "hi")], "[0].role", "expected one of 'system', 'user', 'assistant'"),
            ([{"role": "user", "content": 3}], "[0].content", "expected a string, got int"),
        ],
    )
    def test_invalid_messages(self, messages: object, location: str, reason: str) -> None:
        with pytest.raises(MessageError) as caught:
            render_messages(messages)  # type: ignore[arg-type]
        assert caught.value.location == location
        assert reason in caught.value.reason


class TestConversationalFormatMatchesHH:
    def test_explicit_conversational(self, tmp_path: Path) -> None:
        conversational = {
            "prompt": [
                msg("system", "Be kind."),
                msg("user", "Hi"),
                msg("assistant", "Hey"),
                msg("user", "Capital of Peru?"),
            ],
            "chosen": [msg("assistant", "Lima.")],
            "rejected": [msg("assistant", "Cusco.")],
            "margin": 2,
        }
        history = "\n\nSystem: Be kind.\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Capital of Peru?"
        hh = {"chosen": f"{history}{A}Lima.", "rejected": f"{history}{A}Cusco.", "margin": 2}
        pair = load_one(tmp_path, conversational)
        assert pair == load_one(tmp_path, hh)
        assert pair == PreferencePair(history + "\n\nAssistant:", "Lima.", "Cusco.", 2.0)

    def test_implicit_conversational(self, tmp_path: Path) -> None:
        shared = [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Tell me a fact.")]
        conversational = {
            "chosen": [*shared, msg("assistant", "Water boils at 100 C.")],
            "rejected": [*shared, msg("assistant", "Water boils at 40 C.")],
        }
        history = f"{H}Hi{A}Hello{H}Tell me a fact."
        hh = {
            "chosen": f"{history}{A}Water boils at 100 C.",
            "rejected": f"{history}{A}Water boils at 40 C.",
        }
        pair = load_one(tmp_path, conversational)
        assert pair == load_one(tmp_path, hh)
        assert pair.prompt == history + "\n\nAssistant:"
        assert (pair.chosen, pair.rejected) == ("Water boils at 100 C.", "Water boils at 40 C.")

    def test_empty_contents_are_valid(self, tmp_path: Path) -> None:
        row = {"prompt": [msg("user", "")], "chosen": [msg("assistant", "")], "rejected": []}
        assert load_one(tmp_path, row) == PreferencePair("\n\nHuman: \n\nAssistant:", "", "")


GOOD = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ('{"prompt": "p", "chosen": "a"', None, "invalid JSON"),
        ('["p", "a", "b"]', None, "expected a JSON object, got list"),
        ('{"prompt": "p", "rejected": "b"}', "chosen", "missing"),
        ('{"chosen": "a"}', "rejected", "missing"),
        (
            '{"prompt": "p", "chosen": 3, "rejected": "b"}',
            "chosen",
            "expected a string or a list of messages, got int",
        ),
        ('{"prompt": null, "chosen": "a", "rejected": "b"}', "prompt", "got null"),
        (
            '{"prompt": [], "chosen": "a", "rejected": "b"}',
            "chosen",
            "expected a list of messages like 'prompt', got str",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": []}',
            "rejected",
            "expected a string like 'prompt', got list",
        ),
        (
            '{"chosen": [{"role": "robot", "content": "x"}], "rejected": []}',
            "chosen[0].role",
            "expected one of",
        ),
        (
            '{"prompt": [], "chosen": [{"role": "assistant"}], "rejected": []}',
            "chosen[0].content",
            "missing",
        ),
        (
            '{"prompt": [], "chosen": [], "rejected": [{"role": "user", "content": "x"}]}',
            "rejected[0].role",
            "must start with 'assistant'",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": true}',
            "margin",
            "expected a number, got bool",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "1"}',
            "margin",
            "expected a number, got str",
        ),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": NaN}', "margin", "finite"),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": -Infinity}',
            "margin",
            "finite",
        ),
    ],
)
def test_malformed_line_names_file_line_and_field(
    tmp_path: Path, line: str, field: str | None, reason: str
) -> None:
    path = write_lines(tmp_path / "train.jsonl", [GOOD, "", line, GOOD])
    with pytest.raises(DataError) as caught:
        load_preferences(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    if field is not None:
        assert f"field {field!r}: " in message
    assert reason in message


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid UTF-8"):
        load_preferences(path)


def test_corrupt_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress((GOOD + "\n").encode() * 50)[:-20])
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:\d+: cannot decompress"):
        load_preferences(path)


def test_file_without_pairs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no preference pairs"):
        load_preferences(write_lines(tmp_path / "empty.jsonl", ["", ""]))


def test_skip_bad_counts_reports_and_returns_skipped_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [GOOD, "{oops", GOOD, '{"chosen": 1, "rejected": "b"}', "", GOOD]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        result = load_preferences(path, skip_bad=True)
    assert len(result.pairs) == 3
    assert result.skipped == 2
    assert result.skipped_lines == [2, 4]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 malformed line(s)" in warnings[0]
    assert str(path) in warnings[0]


def test_skip_bad_with_nothing_left_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no preference pairs"):
        load_preferences(write_lines(tmp_path / "bad.jsonl", ["{", "[]"]), skip_bad=True)
