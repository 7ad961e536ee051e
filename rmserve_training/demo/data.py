"""A deterministic synthetic preference set for demos and tests (explicit TRL format).

Each pair asks a question from one of several families (capitals, arithmetic, general facts,
how-to, definitions, translation). The chosen reply is helpful, on-topic and correct. The
rejected reply has exactly one flaw: checkably wrong (a wrong city, sum or fact from a fixed
table), a refusal, rude, cut off mid-sentence, or off-topic (an answer to another family's
question). Facts come from small fixed tables shared by every split, so a small model can
memorise them, and each split draws from its own random stream. The rejected reply is the
longer one in about half of the pairs, so "prefer the longer response" is no better than chance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from rmserve_training.demo.concepts import CONCEPTS, LANGUAGE_COUNTRY, PHRASES
from rmserve_training.demo.tables import CAPITALS, FACTS, TASKS
from rmserve_training.demo.wording import (
    CLOSERS,
    PREAMBLES,
    REFUSAL_REASONS,
    REFUSALS,
    RUDE,
    SUBJECT_CHANGES,
)

FLAW_WEIGHTS = {"wrong": 0.30, "cutoff": 0.18, "refusal": 0.20, "rude": 0.20, "off_topic": 0.12}


@dataclass(frozen=True)
class Question:
    family: str
    prompt: str
    answers: tuple[str, ...]  # correct, on-topic, complete replies of varied length
    wrong: tuple[str, ...]  # replies in the same style that are checkably wrong
    topic: str  # what an on-topic refusal says it will not discuss


def _capital_question(rng: random.Random) -> Question:
    c = rng.choice(CAPITALS)
    prompt = rng.choice(
        (
            "What is the capital of {country}?",
            "Which city is the capital of {country}?",
            "Tell me the capital city of {country}.",
            "What's the capital of {country}?",
            "I'm making a geography quiz. What is the capital of {country}?",
            "Name the capital of {country}, please.",
        )
    ).format(country=c.country)
    styles = (
        "{city}.",
        "It's {city}.",
        "The capital is {city}.",
        "The capital of {country} is {city}.",
        "{city} is the capital of {country}.",
        "The capital of {country} is {city}. It is where the national government and "
        "parliament meet.",
        "That would be {city}. {city} is the capital city of {country} and the seat of its "
        "government, with most ministries and embassies located there.",
    )

    def fill(city: str) -> tuple[str, ...]:
        return tuple(s.format(city=city, country=c.country) for s in styles)

    return Question("capitals", prompt, fill(c.capital), fill(c.wrong), "geography")


def _arithmetic_question(rng: random.Random) -> Question:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        result, sign, verb = a + b, "+", f"Adding {b} to {a}"
        prompt = rng.choice(
            (
                "What is {a} plus {b}?",
                "What is {a} + {b}?",
                "Can you add {a} and {b} for me?",
                "Compute {a} + {b}.",
                "I have {a} apples and buy {b} more. How many apples do I have now?",
            )
        )
    else:
        a = rng.randint(5, 20)
        b = rng.randint(1, a - 1)
        result, sign, verb = a - b, "-", f"Taking {b} away from {a}"
        prompt = rng.choice(
            (
                "What is {a} minus {b}?",
                "What is {a} - {b}?",
                "Subtract {b} from {a}.",
                "I had {a} cookies and ate {b}. How many are left?",
            )
        )
    # Results stay within 0..24; a wrong result is clearly off, not off by one.
    wrong = result + rng.randint(15, 60)
    styles = (
        "{r}.",
        "The answer is {r}.",
        "{a} {sign} {b} = {r}.",
        "{verb} gives {r}, so the answer is {r}.",
        "Let's work it out step by step: {a} {sign} {b} = {r}. The answer is {r}.",
    )

    def fill(r: int) -> tuple[str, ...]:
        return tuple(s.format(a=a, b=b, r=r, sign=sign, verb=verb) for s in styles)

    return Question("arithmetic", prompt.format(a=a, b=b), fill(result), fill(wrong), "maths")


def _fact_question(rng: random.Random) -> Question:
    f = rng.choice(FACTS)
    answers = (f.answer, f"{f.answer} {f.detail}", f"Good question! {f.answer} {f.detail}")
    wrong = (f.wrong, f"{f.wrong} {f.detail}", f"Good question! {f.wrong} {f.detail}")
    return Question("facts", f.question, answers, wrong, "general knowledge")


def _howto_question(rng: random.Random) -> Question:
    t = rng.choice(TASKS)
    prompt = rng.choice(
        (
            "How do I {task}?",
            "What's the best way to {task}?",
            "Can you explain how to {task}?",
            "Give me some tips to {task}.",
            "I've never done this before. How should I {task}?",
        )
    ).format(task=t.task)
    numbered = rng.random() < 0.5
    intro = rng.choice(("", "Here's how. ", "Sure! ", "Good question. "))

    def render(steps: Sequence[str]) -> str:
        if numbered:
            return intro + " ".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))
        return intro + " ".join(steps)

    answers = tuple(render(t.steps[:k]) for k in (2, 3, 4))
    bad_index = rng.randrange(len(t.steps))
    bad_steps = [*t.steps[:bad_index], t.bad_step, *t.steps[bad_index + 1 :]]
    wrong = (render([t.bad_step]), *(render(bad_steps[:k]) for k in (2, 3, 4) if k > bad_index))
    return Question("howto", prompt, answers, wrong, "practical tasks")


def _definition_question(rng: random.Random) -> Question:
    c = rng.choice(CONCEPTS)
    prompt = rng.choice(
        (
            "What is {c}?",
            "Can you explain {c} in simple terms?",
            "Define {c}.",
            "Explain {c} to a ten year old.",
            "I keep hearing about {c}. What is it?",
        )
    ).format(c=c.name)
    answers = (c.definition, f"{c.definition} {c.detail}", f"Sure. {c.definition} {c.detail}")
    wrong = (c.misconception, f"Sure. {c.misconception}")
    return Question("definitions", prompt, answers, wrong, "science and society")


def _translation_question(rng: random.Random) -> Question:
    p = rng.choice(PHRASES)
    prompt = rng.choice(
        (
            "How do you say '{en}' in {lang}?",
            "What is '{en}' in {lang}?",
            "Translate '{en}' into {lang}.",
            "I'm travelling to {country} next week. How do I say '{en}' in {lang}?",
        )
    ).format(en=p.english, lang=p.language, country=LANGUAGE_COUNTRY[p.language])
    styles = (
        "'{t}'.",
        "You say '{t}'.",
        "In {lang}, '{en}' is '{t}'.",
        "In {lang}, '{en}' is '{t}'. It is a useful phrase to know when travelling, and "
        "people will appreciate the effort.",
    )

    def fill(word: str) -> tuple[str, ...]:
        return tuple(s.format(t=word, en=p.english, lang=p.language) for s in styles)

    return Question("translation", prompt, fill(p.translation), fill(p.wrong), "languages")


FAMILIES: dict[str, Callable[[random.Random], Question]] = {
    "capitals": _capital_question,
    "arithmetic": _arithmetic_question,
    "facts": _fact_question,
    "howto": _howto_question,
    "definitions": _definition_question,
    "translation": _translation_question,
}


def _with_closer(rng: random.Random, text: str, probability: float) -> str:
    return f"{text} {rng.choice(CLOSERS)}" if rng.random() < probability else text


def _lower_first(text: str) -> str:
    """'The answer' -> 'the answer', but 'DNA is' stays."""
    return text[0].lower() + text[1:] if text[1:2].islower() else text


def _cut_off(rng: random.Random, text: str) -> str:
    """Stop mid-word or mid-sentence, never on final punctuation."""
    lo, hi = max(1, int(len(text) * 0.35)), max(2, int(len(text) * 0.85))
    if rng.random() < 0.6:
        cuts = [i for i in range(lo, hi) if text[i - 1].isalnum() and text[i].isalnum()]
    else:
        cuts = [i for i in range(lo, hi) if text[i] == " " and text[i - 1].isalnum()]
    if not cuts:
        cuts = [i for i in range(1, len(text)) if text[i - 1].isalnum()]
    return text[: rng.choice(cuts)]


def _rejected(rng: random.Random, question: Question, flaw: str) -> str:
    if flaw == "wrong":
        return _with_closer(rng, rng.choice(question.wrong), 0.3)
    if flaw == "cutoff":
        longer = sorted(question.answers, key=len)[len(question.answers) // 2 :]
        return _cut_off(rng, rng.choice(longer))
    if flaw == "refusal":
        parts = [rng.choice(REFUSALS)]
        if rng.random() < 0.6:
            parts.append(rng.choice(REFUSAL_REASONS).format(topic=question.topic))
        return _with_closer(rng, " ".join(parts), 0.2)
    if flaw == "rude":
        insults = rng.sample(RUDE, rng.randint(1, 3))
        if rng.random() < 0.5:
            return " ".join(insults)
        return f"{insults[0]} {rng.choice(question.answers)}"
    if flaw == "off_topic":
        other = rng.choice([f for f in FAMILIES if f != question.family])
        answer = rng.choice(FAMILIES[other](rng).answers)
        if rng.random() < 0.5:
            answer = rng.choice(SUBJECT_CHANGES) + _lower_first(answer)
        return _with_closer(rng, answer, 0.2)
    raise ValueError(f"unknown flaw {flaw!r}")


def _make_pair(rng: random.Random) -> dict[str, str]:
    family = rng.choice(list(FAMILIES))
    question = FAMILIES[family](rng)
    flaw = rng.choices(list(FLAW_WEIGHTS), weights=list(FLAW_WEIGHTS.values()))[0]
    prompt = question.prompt
    if rng.random() < 0.35:
        prompt = rng.choice(PREAMBLES) + prompt
    rejected_longer = rng.random() < 0.5
    # Redraw both replies until the length relation matches the coin, so length carries no signal.
    for _ in range(30):
        chosen = _with_closer(rng, rng.choice(question.answers), 0.3)
        rejected = _rejected(rng, question, flaw)
        if (len(rejected) > len(chosen)) == rejected_longer:
            break
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "family": family,
        "flaw": flaw,
    }


def generate_demo_pairs(
    n: int, seed: int, split: str, exclude: Collection[tuple[str, str, str]] = ()
) -> list[dict[str, str]]:
    """``n`` distinct explicit-format rows (prompt, chosen, rejected, plus family and flaw).

    Each (seed, split) is its own random stream. Rows whose (prompt, chosen, rejected) is in
    ``exclude`` are never returned, so an eval split can be kept apart from its train split.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"rmserve-demo:{seed}:{split}")
    seen = set(exclude)
    rows: list[dict[str, str]] = []
    for _ in range(50 * n + 100):
        if len(rows) == n:
            return rows
        row = _make_pair(rng)
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if len(rows) == n:
        return rows
    raise ValueError(f"could only make {len(rows)} distinct demo pairs of the {n} asked for")


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_demo_data(
    out_dir: Path, n_train: int = 2000, n_eval: int = 400, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl``; the same arguments give the same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = generate_demo_pairs(n_train, seed, "train")
    train_keys = {(r["prompt"], r["chosen"], r["rejected"]) for r in train}
    evaluation = generate_demo_pairs(n_eval, seed, "eval", exclude=train_keys)
    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    _write_jsonl(train_path, train)
    _write_jsonl(eval_path, evaluation)
    return train_path, eval_path
