"""The dialogue generator: deterministic, HH format, and the preference signal sits in the first
turn (a reader of the whole dialogue is always right, a reader of the last reply is at chance)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from rmserve.artifact.manifest import Preprocessing
from rmserve.text.preference_data import load_preferences
from rmserve.text.preprocess import Preprocessor
from rmserve_training.demo.concepts import PHRASES
from rmserve_training.demo.dialogues import (
    ASSISTANT,
    HUMAN,
    RECALLS,
    generate_dialogue_pairs,
    write_dialogue_data,
)
from rmserve_training.demo.tables import CAPITALS
from rmserve_training.model.backbones import minilm_folder
from rmserve_training.settings import TrainSettings

Row = dict[str, str | int]


@pytest.fixture(scope="module")
def rows() -> tuple[list[Row], list[Row]]:
    train = generate_dialogue_pairs(1200, seed=0, split="train")
    evaluation = generate_dialogue_pairs(
        400, seed=0, split="eval", exclude={str(r["chosen"]) for r in train}
    )
    return train, evaluation


def human_turns(dialogue: str) -> list[str]:
    return [turn.split(ASSISTANT)[0] for turn in dialogue.split(HUMAN)[1:]]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = write_dialogue_data(tmp_path / "a", n_train=60, n_eval=20, seed=4)
    second = write_dialogue_data(tmp_path / "b", n_train=60, n_eval=20, seed=4)
    other = write_dialogue_data(tmp_path / "c", n_train=60, n_eval=20, seed=5)
    for a, b, c in zip(first, second, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_files_load_as_hh_dialogues_whose_prompt_is_all_but_the_last_reply(
    tmp_path: Path,
) -> None:
    train_path, eval_path = write_dialogue_data(tmp_path, n_train=40, n_eval=10, seed=1)
    raw = [json.loads(line) for line in train_path.read_text(encoding="utf-8").splitlines()]
    pairs = load_preferences(train_path).pairs
    assert len(pairs) == 40 and len(load_preferences(eval_path).pairs) == 10
    for row, pair in zip(raw, pairs, strict=True):
        assert row["chosen"].startswith(HUMAN) and pair.prompt.endswith(ASSISTANT)
        assert pair.prompt.count(HUMAN) == row["turns"] >= 6
        assert pair.chosen == row["chosen"][len(pair.prompt) + 1 :]
        assert pair.chosen.replace(row["value"], row["distractor"]) == pair.rejected
        assert len(pair.prompt) > 5 * len(pair.chosen)  # the prompt is most of the text


def test_the_deciding_fact_is_only_in_the_first_turn(rows: tuple[list[Row], list[Row]]) -> None:
    for row in rows[0] + rows[1]:
        fact, distractor = str(row["fact"]), str(row["distractor"])
        chosen = str(row["chosen"])
        prompt = chosen[: chosen.rindex(ASSISTANT)]
        turns = human_turns(chosen)
        assert str(row["statement"]) in turns[0] and fact in turns[0]
        assert fact not in prompt.replace(turns[0], "", 1)
        assert distractor not in prompt
        assert str(row["value"]) not in turns[-1]
    assert {row["kind"] for row in rows[0]} == set(RECALLS)


def answer_from_first_turn(row: Row) -> str:
    """What the first turn's fact says the final reply must contain."""
    fact, final_question = str(row["fact"]), human_turns(str(row["chosen"]))[-1]
    if row["kind"] == "home_country":
        return next(c.capital for c in CAPITALS if c.country == fact)
    if row["kind"] == "language":
        quoted = re.search(r"'([^']+)' in the language", final_question)
        assert quoted is not None, final_question
        english = quoted.group(1)
        return next(p.translation for p in PHRASES if (p.english, p.language) == (english, fact))
    return fact


def test_reading_the_whole_dialogue_wins_and_the_last_reply_alone_is_chance(
    rows: tuple[list[Row], list[Row]],
) -> None:
    train, evaluation = rows
    assert not {r["chosen"] for r in train} & {r["chosen"] for r in evaluation}
    # Best response-only rule: how often each value was the chosen one in training.
    wins, losses = (
        Counter(str(r["value"]) for r in train),
        Counter(str(r["distractor"]) for r in train),
    )

    def reply_only_score(value: str) -> float:
        return (wins[value] + 1) / (wins[value] + losses[value] + 2)

    right = sum(
        reply_only_score(str(r["value"])) > reply_only_score(str(r["distractor"]))
        for r in evaluation
    )
    assert 0.40 <= right / len(evaluation) <= 0.60
    # Reading back to the first turn picks the chosen reply every time.
    for row in evaluation:
        assert answer_from_first_turn(row) == row["value"] != row["distractor"]


def test_default_window_keeps_the_first_turn_the_old_one_cut_most(
    rows: tuple[list[Row], list[Row]],
) -> None:
    """What docs/guides/training.md#recipe-for-long-dialogues says about ``max_length``."""
    evaluation = rows[1]
    text = (minilm_folder() / "tokenizer.json").read_text(encoding="utf-8")
    bare = Tokenizer.from_str(text)
    bare.no_truncation()
    bare.no_padding()

    def visible_share(max_length: int) -> float:
        preprocessor = Preprocessor(
            Tokenizer.from_str(text),
            Preprocessing(join="pair", max_length=max_length, pad_token_id=0),
        )
        seen = 0
        for row in evaluation:
            chosen = str(row["chosen"])
            cut = chosen.rindex(ASSISTANT) + len(ASSISTANT)
            ids = preprocessor.prepare(chosen[:cut], chosen[cut + 1 :]).input_ids.tolist()
            needle = bare.encode(str(row["statement"]), add_special_tokens=False).ids
            seen += any(ids[i : i + len(needle)] == needle for i in range(len(ids)))
        return seen / len(evaluation)

    assert TrainSettings.model_fields["max_length"].default == 512
    assert visible_share(512) == 1.0
    assert visible_share(256) < 0.5
