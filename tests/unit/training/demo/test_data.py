from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rmserve.text.preference_data import load_preferences
from rmserve_training.demo.data import (
    CAPITALS,
    FAMILIES,
    FLAW_WEIGHTS,
    generate_demo_pairs,
    write_demo_data,
)

Row = dict[str, str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Row], list[Row]]:
    train_path, eval_path = write_demo_data(tmp_path_factory.mktemp("demo"))
    return read_rows(train_path), read_rows(eval_path)


def read_rows(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def key(row: Row) -> tuple[str, str, str]:
    return row["prompt"], row["chosen"], row["rejected"]


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = write_demo_data(tmp_path / "a", n_train=300, n_eval=100, seed=7)
    second = write_demo_data(tmp_path / "b", n_train=300, n_eval=100, seed=7)
    other = write_demo_data(tmp_path / "c", n_train=300, n_eval=100, seed=8)
    assert [p.name for p in first] == ["train.jsonl", "eval.jsonl"]
    for a, b, c in zip(first, second, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_written_files_load_as_explicit_pairs(tmp_path: Path) -> None:
    train_path, eval_path = write_demo_data(tmp_path, n_train=50, n_eval=20, seed=3)
    train, evaluation = load_preferences(train_path), load_preferences(eval_path)
    assert (len(train.pairs), len(evaluation.pairs)) == (50, 20)
    assert train.skipped == evaluation.skipped == 0
    rows = read_rows(train_path)
    assert [(p.prompt, p.chosen, p.rejected) for p in train.pairs] == [key(r) for r in rows]


def test_sizes_and_every_family_and_flaw_in_both_splits(
    demo: tuple[list[Row], list[Row]],
) -> None:
    train, evaluation = demo
    assert (len(train), len(evaluation)) == (2000, 400)
    for rows in (train, evaluation):
        assert {r["family"] for r in rows} == set(FAMILIES)
        assert {r["flaw"] for r in rows} == set(FLAW_WEIGHTS)


def test_eval_shares_no_pair_with_train_and_no_pair_repeats(
    demo: tuple[list[Row], list[Row]],
) -> None:
    train, evaluation = demo
    train_keys, eval_keys = {key(r) for r in train}, {key(r) for r in evaluation}
    assert len(train_keys) == len(train)
    assert len(eval_keys) == len(evaluation)
    assert not train_keys & eval_keys


def longer_wins(rows: list[Row]) -> float:
    return sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)


def test_preferring_the_longer_response_is_near_chance_on_eval(
    demo: tuple[list[Row], list[Row]],
) -> None:
    _, evaluation = demo
    assert 0.40 <= longer_wins(evaluation) <= 0.60
    words = sum(len(r["chosen"].split()) > len(r["rejected"].split()) for r in evaluation)
    assert 0.40 <= words / len(evaluation) <= 0.60


@pytest.mark.parametrize("seed", [1, 2])
def test_length_baseline_holds_for_other_seeds(seed: int) -> None:
    assert 0.40 <= longer_wins(generate_demo_pairs(400, seed, "eval")) <= 0.60


def test_rejected_is_longer_for_every_kind_of_flaw(demo: tuple[list[Row], list[Row]]) -> None:
    train, _ = demo
    for flaw in FLAW_WEIGHTS:
        rows = [r for r in train if r["flaw"] == flaw]
        assert 0.25 <= 1 - longer_wins(rows) <= 0.75, flaw


def test_texts_are_short_and_never_identical(demo: tuple[list[Row], list[Row]]) -> None:
    train, evaluation = demo
    for row in train + evaluation:
        assert row["chosen"] != row["rejected"]
        for response in (row["chosen"], row["rejected"]):
            assert response.strip() == response != ""
            assert 3 <= len(f"{row['prompt']} {response}".split()) <= 90


def test_cut_offs_stop_without_final_punctuation(demo: tuple[list[Row], list[Row]]) -> None:
    train, _ = demo
    cut = [r["rejected"] for r in train if r["flaw"] == "cutoff"]
    assert cut
    assert all(text[-1].isalnum() for text in cut)


def test_chosen_capital_is_right_and_wrong_capital_is_wrong(
    demo: tuple[list[Row], list[Row]],
) -> None:
    train, _ = demo
    rows = [r for r in train if r["family"] == "capitals" and r["flaw"] == "wrong"]
    assert rows
    for row in rows:
        entry = next(c for c in CAPITALS if re.search(rf"\b{c.country}\b", row["prompt"]))
        assert entry.capital in row["chosen"]
        assert entry.wrong in row["rejected"]
        assert entry.capital not in row["rejected"]


def expected_result(prompt: str) -> int:
    a, b = (int(n) for n in re.findall(r"\d+", prompt))
    if "Subtract" in prompt:  # "Subtract {b} from {a}."
        return b - a
    if any(word in prompt for word in (" minus ", " - ", " ate ")):
        return a - b
    return a + b


def test_arithmetic_chosen_is_correct_and_wrong_answer_is_clearly_off(
    demo: tuple[list[Row], list[Row]],
) -> None:
    train, _ = demo
    rows = [r for r in train if r["family"] == "arithmetic"]
    assert any(r["flaw"] == "wrong" for r in rows)
    for row in rows:
        result = expected_result(row["prompt"])
        numbers = [int(n) for n in re.findall(r"\d+", row["chosen"])]
        assert numbers[-1] == result
        if row["flaw"] == "wrong":
            wrong = int(re.findall(r"\d+", row["rejected"])[-1])
            assert wrong - result >= 10


def test_eval_can_exclude_pairs_and_n_is_checked() -> None:
    first = generate_demo_pairs(30, 0, "eval")
    again = generate_demo_pairs(30, 0, "eval", exclude={key(first[0])})
    assert key(first[0]) not in {key(r) for r in again}
    assert generate_demo_pairs(0, 0, "train") == []
    with pytest.raises(ValueError, match="n must be"):
        generate_demo_pairs(-1, 0, "train")
