"""Deterministic multi-turn dialogues in the Anthropic HH format with a preference signal deep in
the conversation, for benchmarking recipes on long prompts.

Each row is ``{"chosen", "rejected"}``: two whole dialogues ``"\\n\\nHuman: …\\n\\nAssistant: …"``
that share everything but the final assistant turn. The human states a fact about themselves in
the FIRST exchange (the country they live in, their dog's name, the language they are learning,
their favourite colour), then asks several unrelated demo questions that the assistant answers
correctly, then asks a final question that only that early fact answers. The chosen reply uses
the fact; the rejected reply is the same sentence with another value of the same kind, drawn
from the same table and appearing nowhere in the dialogue. Chosen and rejected values come from
one pool with the same distribution, so the final reply alone carries no signal: a model has to
read back to the first exchange (hundreds of tokens earlier) to beat chance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from rmserve_training.demo.concepts import PHRASES
from rmserve_training.demo.data import FAMILIES
from rmserve_training.demo.tables import CAPITALS
from rmserve_training.demo.wording import CLOSERS

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
MIN_FILLER_TURNS, MAX_FILLER_TURNS = 5, 8

PET_NAMES = (
    "Biscuit", "Pepper", "Maple", "Rocket", "Waffles", "Juniper", "Pickles", "Ziggy",
    "Clover", "Bandit", "Nugget", "Mochi", "Sprocket", "Tofu", "Marlowe", "Pretzel",
)  # fmt: skip
COLOURS = (
    "teal", "crimson", "mustard yellow", "lavender", "olive green", "navy blue", "coral",
    "charcoal grey", "burgundy", "turquoise", "peach", "forest green",
)  # fmt: skip
ACKNOWLEDGEMENTS = (
    "Nice to meet you! What would you like to know?",
    "Thanks for telling me. How can I help today?",
    "Got it, I'll keep that in mind. What's your question?",
    "Lovely! Ask me anything.",
    "Noted. What can I do for you?",
)
SEGUES = ("Thanks. ", "Great, thank you. ", "Okay. ", "One last thing. ", "Perfect. ", "")


@dataclass(frozen=True)
class Recall:
    """The fact stated early, and the final question and reply that depend on it."""

    kind: str
    statement: str  # the human's first-turn sentence holding the fact
    question: str  # the final human question, which does not restate the fact
    reply: str  # the final assistant reply, a template with {v} for the value
    fact: str  # the word in ``statement`` that decides (country, name, language, colour)
    value: str  # the value that matches the fact
    distractor: str  # a value of the same kind that does not


def _home_country(rng: random.Random) -> Recall:
    home, other = rng.sample(CAPITALS, 2)
    statement = rng.choice(
        ("I live in {c}.", "I'm from {c}, by the way.", "Some context: my home country is {c}.")
    ).format(c=home.country)
    question = rng.choice(
        (
            "What is the capital of the country I live in?",
            "Remind me, what's the capital of my home country?",
            "Which city is the capital of the country I told you I'm from?",
        )
    )
    template = rng.choice(
        ("The capital of your home country is {v}.", "That would be {v}.", "It's {v}.")
    )
    return Recall(
        "home_country", statement, question, template, home.country, home.capital, other.capital
    )


def _pet_name(rng: random.Random) -> Recall:
    name, other = rng.sample(PET_NAMES, 2)
    statement = rng.choice(
        ("My dog is called {n}.", "I have a puppy named {n}.", "My dog's name is {n}.")
    ).format(n=name)
    question = rng.choice(
        (
            "Do you remember what my dog is called?",
            "What's my dog's name again?",
            "I want to buy a name tag for my dog. What name should go on it?",
        )
    )
    template = rng.choice(("Your dog is called {v}.", "{v}, of course!", "Put '{v}' on the tag."))
    return Recall("pet_name", statement, question, template, name, name, other)


def _learning_language(rng: random.Random) -> Recall:
    phrase = rng.choice(PHRASES)
    other = rng.choice([p for p in PHRASES if p.english == phrase.english and p != phrase])
    statement = rng.choice(
        ("I'm learning {l} at the moment.", "I've started taking {l} lessons.")
    ).format(l=phrase.language)
    question = rng.choice(
        (
            "How do I say '{e}' in the language I'm learning?",
            "What's '{e}' in the language I told you I'm studying?",
        )
    ).format(e=phrase.english)
    template = rng.choice(("You would say '{v}'.", "'{v}'.", "It's '{v}'."))
    return Recall(
        "language",
        statement,
        question,
        template,
        phrase.language,
        phrase.translation,
        other.translation,
    )


def _favourite_colour(rng: random.Random) -> Recall:
    colour, other = rng.sample(COLOURS, 2)
    statement = rng.choice(
        ("My favourite colour is {c}.", "I love the colour {c} more than any other.")
    ).format(c=colour)
    question = rng.choice(
        (
            "I'm repainting my bedroom. Which colour would I like best?",
            "What colour should I pick for my new scarf, given what I like?",
        )
    )
    template = rng.choice(("Go with {v}.", "I'd pick {v}, since that's your favourite."))
    return Recall("colour", statement, question, template, colour, colour, other)


RECALLS: dict[str, Callable[[random.Random], Recall]] = {
    "home_country": _home_country,
    "pet_name": _pet_name,
    "language": _learning_language,
    "colour": _favourite_colour,
}


def _fill(template: str, value: str) -> str:
    return template.format(v=value)


def _filler_exchange(rng: random.Random, avoid: Collection[str]) -> tuple[str, str]:
    """An unrelated demo question and a correct answer that mention none of ``avoid``."""
    for _ in range(100):
        question = FAMILIES[rng.choice(list(FAMILIES))](rng)
        answer = rng.choice(question.answers)
        if rng.random() < 0.3:
            answer = f"{answer} {rng.choice(CLOSERS)}"
        text = question.prompt + answer
        if not any(word.lower() in text.lower() for word in avoid):
            return question.prompt, answer
    raise RuntimeError("no filler exchange avoids the dialogue's key values")  # pragma: no cover


def _dialogue(turns: list[tuple[str, str]]) -> str:
    return "".join(f"{HUMAN} {human}{ASSISTANT} {assistant}" for human, assistant in turns)


def make_dialogue_pair(rng: random.Random) -> dict[str, str | int]:
    """One HH row plus where its signal is: kind, value, distractor, statement, fact, turns."""
    kind = rng.choice(list(RECALLS))
    recall = RECALLS[kind](rng)
    avoid = (recall.fact, recall.value, recall.distractor)
    exchanges = [
        _filler_exchange(rng, avoid) for _ in range(rng.randint(MIN_FILLER_TURNS, MAX_FILLER_TURNS))
    ]
    # The first exchange states the fact, then asks its own unrelated question.
    (question, answer), rest = exchanges[0], exchanges[1:]
    opening = (f"{recall.statement} {question}", f"{rng.choice(ACKNOWLEDGEMENTS)} {answer}")
    final_question = rng.choice(SEGUES) + recall.question
    prompt = _dialogue([opening, *rest]) + f"{HUMAN} {final_question}{ASSISTANT}"
    return {
        "chosen": f"{prompt} {_fill(recall.reply, recall.value)}",
        "rejected": f"{prompt} {_fill(recall.reply, recall.distractor)}",
        "kind": kind,
        "value": recall.value,
        "distractor": recall.distractor,
        "statement": recall.statement,
        "fact": recall.fact,
        "turns": len(exchanges) + 1,
    }


def generate_dialogue_pairs(
    n: int, seed: int, split: str, exclude: Collection[str] = ()
) -> list[dict[str, str | int]]:
    """``n`` distinct rows; each (seed, split) is its own random stream. Rows whose chosen
    dialogue is in ``exclude`` are never returned, so an eval split stays apart from train."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"rmserve-dialogues:{seed}:{split}")
    seen = set(exclude)
    rows: list[dict[str, str | int]] = []
    for _ in range(10 * n + 100):
        if len(rows) == n:
            break
        row = make_dialogue_pair(rng)
        if row["chosen"] not in seen:
            seen.add(str(row["chosen"]))
            rows.append(row)
    if len(rows) < n:
        raise ValueError(f"could only make {len(rows)} distinct dialogues of the {n} asked for")
    return rows


def write_dialogue_data(
    out_dir: Path, n_train: int = 2000, n_eval: int = 400, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl``; the same arguments give the same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = generate_dialogue_pairs(n_train, seed, "train")
    evaluation = generate_dialogue_pairs(
        n_eval, seed, "eval", exclude={str(r["chosen"]) for r in train}
    )
    paths = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    for path, rows in zip(paths, (train, evaluation), strict=True):
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths
