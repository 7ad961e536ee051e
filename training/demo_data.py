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
from typing import NamedTuple

FLAW_WEIGHTS = {"wrong": 0.30, "cutoff": 0.18, "refusal": 0.20, "rude": 0.20, "off_topic": 0.12}


@dataclass(frozen=True)
class Question:
    family: str
    prompt: str
    answers: tuple[str, ...]  # correct, on-topic, complete replies of varied length
    wrong: tuple[str, ...]  # replies in the same style that are checkably wrong
    topic: str  # what an on-topic refusal says it will not discuss


class Capital(NamedTuple):
    country: str
    capital: str
    wrong: str  # a well-known city of the same country that is not its capital


CAPITALS = (
    Capital("France", "Paris", "Lyon"),
    Capital("Germany", "Berlin", "Munich"),
    Capital("Italy", "Rome", "Milan"),
    Capital("Spain", "Madrid", "Barcelona"),
    Capital("Japan", "Tokyo", "Osaka"),
    Capital("Australia", "Canberra", "Sydney"),
    Capital("Canada", "Ottawa", "Toronto"),
    Capital("Brazil", "Brasilia", "Rio de Janeiro"),
    Capital("Turkey", "Ankara", "Istanbul"),
    Capital("India", "New Delhi", "Mumbai"),
    Capital("China", "Beijing", "Shanghai"),
    Capital("Egypt", "Cairo", "Alexandria"),
    Capital("Nigeria", "Abuja", "Lagos"),
    Capital("Kenya", "Nairobi", "Mombasa"),
    Capital("Morocco", "Rabat", "Casablanca"),
    Capital("Switzerland", "Bern", "Zurich"),
    Capital("New Zealand", "Wellington", "Auckland"),
    Capital("Vietnam", "Hanoi", "Ho Chi Minh City"),
    Capital("Pakistan", "Islamabad", "Karachi"),
    Capital("Russia", "Moscow", "Saint Petersburg"),
    Capital("South Korea", "Seoul", "Busan"),
    Capital("Poland", "Warsaw", "Krakow"),
    Capital("Norway", "Oslo", "Bergen"),
    Capital("Portugal", "Lisbon", "Porto"),
    Capital("Greece", "Athens", "Thessaloniki"),
    Capital("Ireland", "Dublin", "Cork"),
    Capital("Peru", "Lima", "Cusco"),
    Capital("Colombia", "Bogota", "Medellin"),
    Capital("Sweden", "Stockholm", "Gothenburg"),
    Capital("Scotland", "Edinburgh", "Glasgow"),
)


class Fact(NamedTuple):
    question: str
    answer: str
    wrong: str
    detail: str  # a true follow-up sentence that fits after either answer


FACTS = (
    Fact(
        "How many legs does a spider have?",
        "A spider has eight legs.",
        "A spider has twelve legs.",
        "Spiders are arachnids, not insects.",
    ),
    Fact(
        "How many minutes are in an hour?",
        "There are 60 minutes in an hour.",
        "There are 100 minutes in an hour.",
        "Each minute is in turn made of 60 seconds.",
    ),
    Fact(
        "At what temperature does water boil at sea level, in degrees Celsius?",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 40 degrees Celsius at sea level.",
        "At higher altitudes it boils at a lower temperature.",
    ),
    Fact(
        "What is the largest planet in our solar system?",
        "Jupiter is the largest planet in our solar system.",
        "Mercury is the largest planet in our solar system.",
        "It is a gas giant with a famous storm called the Great Red Spot.",
    ),
    Fact(
        "Which planet is known as the Red Planet?",
        "Mars is known as the Red Planet.",
        "Neptune is known as the Red Planet.",
        "Its colour comes from iron oxide dust on the surface.",
    ),
    Fact(
        "Which gas do plants take in from the air to make their food?",
        "Plants take in carbon dioxide from the air.",
        "Plants take in helium from the air.",
        "They release oxygen as a by-product.",
    ),
    Fact(
        "Who wrote Romeo and Juliet?",
        "William Shakespeare wrote Romeo and Juliet.",
        "Charles Dickens wrote Romeo and Juliet.",
        "The play was first performed in the 1590s.",
    ),
    Fact(
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci painted the Mona Lisa.",
        "Pablo Picasso painted the Mona Lisa.",
        "The painting hangs in the Louvre in Paris.",
    ),
    Fact(
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest ocean on Earth.",
        "The Arctic Ocean is the largest ocean on Earth.",
        "It covers about a third of the planet's surface.",
    ),
    Fact(
        "What is the tallest mountain above sea level?",
        "Mount Everest is the tallest mountain above sea level.",
        "Ben Nevis is the tallest mountain above sea level.",
        "It lies in the Himalayas on the border of Nepal and China.",
    ),
    Fact(
        "How many bones are in an adult human body?",
        "An adult human body has 206 bones.",
        "An adult human body has 52 bones.",
        "Babies are born with more, and some fuse together as they grow.",
    ),
    Fact(
        "What is the chemical symbol for gold?",
        "The chemical symbol for gold is Au.",
        "The chemical symbol for gold is Gd.",
        "It comes from the Latin word aurum.",
    ),
    Fact(
        "How many continents are there?",
        "There are seven continents.",
        "There are fifteen continents.",
        "Asia is the largest of them.",
    ),
    Fact(
        "At what temperature does water freeze, in degrees Celsius?",
        "Water freezes at 0 degrees Celsius.",
        "Water freezes at 25 degrees Celsius.",
        "That is 32 degrees Fahrenheit.",
    ),
    Fact(
        "How many days are in a leap year?",
        "A leap year has 366 days.",
        "A leap year has 400 days.",
        "The extra day is added to February.",
    ),
    Fact(
        "Which organ pumps blood around the body?",
        "The heart pumps blood around the body.",
        "The liver pumps blood around the body.",
        "An adult heart beats about 60 to 100 times a minute at rest.",
    ),
    Fact(
        "What is the hardest natural substance?",
        "Diamond is the hardest natural substance.",
        "Chalk is the hardest natural substance.",
        "It is made of carbon atoms in a tight crystal.",
    ),
    Fact(
        "How many sides does a hexagon have?",
        "A hexagon has six sides.",
        "A hexagon has nine sides.",
        "Honeycomb cells are a well-known example of the shape.",
    ),
    Fact(
        "What is the main language spoken in Brazil?",
        "The main language spoken in Brazil is Portuguese.",
        "The main language spoken in Brazil is Swedish.",
        "Brazil is the largest Portuguese-speaking country in the world.",
    ),
    Fact(
        "What is the largest mammal?",
        "The blue whale is the largest mammal.",
        "The rabbit is the largest mammal.",
        "It can grow to around 30 metres long.",
    ),
)


class Task(NamedTuple):
    task: str
    steps: tuple[str, ...]
    bad_step: str  # advice that is plainly wrong or harmful


TASKS = (
    Task(
        "boil an egg",
        (
            "Place the egg in a pot and cover it with cold water.",
            "Bring the water to a boil over medium heat.",
            "Let it simmer for about seven minutes for a firm yolk.",
            "Cool the egg in cold water before peeling it.",
        ),
        "Put the egg in the microwave in its shell for ten minutes.",
    ),
    Task(
        "make a cup of tea",
        (
            "Boil some fresh water.",
            "Pour it over a tea bag in a mug.",
            "Let it steep for three to five minutes.",
            "Remove the bag and add milk or sugar if you like.",
        ),
        "Drop the tea bag into cold tap water and drink it straight away.",
    ),
    Task(
        "restart my wifi router",
        (
            "Unplug the router from the power socket.",
            "Wait about thirty seconds.",
            "Plug it back in and wait for the lights to settle.",
            "Reconnect your devices once the network appears.",
        ),
        "Pour a glass of water over the router to cool it down.",
    ),
    Task(
        "water a houseplant",
        (
            "Check that the top inch of soil is dry.",
            "Water slowly at the base until it drains from the bottom.",
            "Empty the saucer so the roots do not sit in water.",
            "Repeat when the soil dries out again.",
        ),
        "Pour salty water over the leaves every hour.",
    ),
    Task(
        "back up my phone",
        (
            "Connect to wifi and plug in the charger.",
            "Open the backup section in your settings.",
            "Turn on cloud backup and tap back up now.",
            "Check that the last backup time has updated.",
        ),
        "Delete all of your photos first so the backup finishes faster.",
    ),
    Task(
        "clean a cast iron pan",
        (
            "Rinse the pan with hot water while it is still warm.",
            "Scrub off stuck food with a brush or coarse salt.",
            "Dry it completely on the stove.",
            "Rub a thin layer of oil over the surface.",
        ),
        "Leave it to soak in soapy water overnight and let it air dry.",
    ),
    Task(
        "fix a flat bike tyre",
        (
            "Take the wheel off and lever the tyre away from the rim.",
            "Find the hole in the inner tube and patch it or fit a new tube.",
            "Put the tube and tyre back on the rim.",
            "Pump it up to the pressure printed on the tyre.",
        ),
        "Fill the tyre with sand so that it can never go flat again.",
    ),
    Task(
        "fall asleep faster",
        (
            "Keep a regular bedtime, even at weekends.",
            "Avoid screens for an hour before bed.",
            "Keep your bedroom cool, dark and quiet.",
            "Skip coffee and tea in the afternoon.",
        ),
        "Drink three cups of strong coffee right before bed.",
    ),
    Task(
        "study for an exam",
        (
            "Make a schedule that covers each topic.",
            "Test yourself with practice questions instead of rereading.",
            "Study in short sessions with breaks.",
            "Get a good night's sleep before the exam.",
        ),
        "Stay awake all night before the exam and skip breakfast.",
    ),
    Task(
        "write a thank you note",
        (
            "Address the person by name.",
            "Say exactly what you are thanking them for.",
            "Mention how you have used or enjoyed it.",
            "Close with a warm sign-off and your name.",
        ),
        "Complain about the gift and ask for cash instead.",
    ),
)


class Concept(NamedTuple):
    name: str
    definition: str
    detail: str
    misconception: str


CONCEPTS = (
    Concept(
        "photosynthesis",
        "Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide "
        "into sugar and oxygen.",
        "It happens mainly in the leaves, inside tiny structures called chloroplasts.",
        "Photosynthesis is how plants suck food out of the soil through their roots at night.",
    ),
    Concept(
        "gravity",
        "Gravity is the force that pulls objects with mass toward each other.",
        "It keeps us on the ground and holds the Moon in orbit around the Earth.",
        "Gravity is a magnetic force that only works on metal objects.",
    ),
    Concept(
        "inflation",
        "Inflation is the rise in the general level of prices over time.",
        "When inflation is high, the same amount of money buys fewer goods.",
        "Inflation is when prices fall every year so that money buys more and more.",
    ),
    Concept(
        "a black hole",
        "A black hole is a region of space where gravity is so strong that not even light "
        "can escape.",
        "Many form when very massive stars collapse at the end of their lives.",
        "A black hole is a deep pit in the ground left behind by a falling asteroid.",
    ),
    Concept(
        "an atom",
        "An atom is the smallest unit of a chemical element.",
        "It has a nucleus of protons and neutrons surrounded by electrons.",
        "An atom is a kind of living cell found in plants and animals.",
    ),
    Concept(
        "democracy",
        "Democracy is a system of government in which citizens choose their leaders by voting.",
        "Power rests with the people rather than with a single ruler.",
        "Democracy is a system in which one king makes every decision alone.",
    ),
    Concept(
        "a vaccine",
        "A vaccine trains your immune system to recognise a germ without making you ill.",
        "Your body can then fight off the real infection quickly later on.",
        "A vaccine is a painkiller you take after you are sick to make the fever go away.",
    ),
    Concept(
        "a volcano",
        "A volcano is an opening in the Earth's crust where molten rock, ash and gas escape.",
        "The molten rock is called lava once it reaches the surface.",
        "A volcano is a mountain made of ice that melts every summer.",
    ),
    Concept(
        "DNA",
        "DNA is the molecule that carries the genetic instructions of living things.",
        "It is shaped like a twisted ladder called a double helix.",
        "DNA is a type of vitamin found in orange juice.",
    ),
    Concept(
        "an eclipse",
        "An eclipse happens when one body in space moves into the shadow of another, as when "
        "the Moon passes between the Sun and the Earth.",
        "During a total solar eclipse the sky goes dark for a few minutes.",
        "An eclipse happens when thick clouds cover the Sun for a whole day.",
    ),
    Concept(
        "machine learning",
        "Machine learning is a way of building computer programs that learn patterns from "
        "examples instead of following hand-written rules.",
        "Spam filters and recommendation systems often rely on it.",
        "Machine learning is when one machine repairs another machine in a factory.",
    ),
    Concept(
        "the internet",
        "The internet is a global network of computers that exchange data using shared rules "
        "called protocols.",
        "The web, email and video calls all run on top of it.",
        "The internet is one giant computer kept in a single building in California.",
    ),
)


class Phrase(NamedTuple):
    english: str
    language: str
    translation: str
    wrong: str  # an unrelated word of the same language


PHRASES = (
    Phrase("hello", "Spanish", "hola", "manzana"),
    Phrase("thank you", "Spanish", "gracias", "zapato"),
    Phrase("goodbye", "Spanish", "adios", "ventana"),
    Phrase("please", "Spanish", "por favor", "queso"),
    Phrase("hello", "French", "bonjour", "fromage"),
    Phrase("thank you", "French", "merci", "chaussure"),
    Phrase("goodbye", "French", "au revoir", "pomme"),
    Phrase("please", "French", "s'il vous plait", "voiture"),
    Phrase("hello", "German", "hallo", "Kartoffel"),
    Phrase("thank you", "German", "danke", "Schuh"),
    Phrase("goodbye", "German", "auf Wiedersehen", "Fenster"),
    Phrase("please", "German", "bitte", "Apfel"),
    Phrase("hello", "Italian", "ciao", "formaggio"),
    Phrase("thank you", "Italian", "grazie", "scarpa"),
    Phrase("goodbye", "Italian", "arrivederci", "finestra"),
    Phrase("please", "Italian", "per favore", "mela"),
)
LANGUAGE_COUNTRY = {"Spanish": "Spain", "French": "France", "German": "Germany", "Italian": "Italy"}

PREAMBLES = (
    "Quick question: ",
    "Hi! ",
    "I'm studying for a test. ",
    "My friend and I disagree about this. ",
    "Could you help me with something? ",
    "Hello there. ",
)
CLOSERS = (
    "Hope that helps!",
    "Let me know if you have any other questions.",
    "Happy to explain more if you like.",
    "Good luck!",
    "Feel free to ask a follow-up.",
)
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm not able to answer that question.",
    "Sorry, that's not something I can assist with.",
    "I'd rather not answer that.",
    "Unfortunately, I can't provide that information.",
    "As an AI, I cannot help with this request.",
    "I won't be answering that one.",
)
REFUSAL_REASONS = (
    "Questions about {topic} are outside what I can discuss.",
    "I don't give out information about {topic}.",
    "You may want to ask an expert in {topic} instead.",
    "Please consult a reliable source on {topic}.",
    "My guidelines stop me from discussing {topic} in any detail.",
)
SUBJECT_CHANGES = (
    "By the way, ",
    "On a different note, ",
    "Random thought: ",
    "Speaking of something else, ",
    "Anyway, here is something interesting. ",
)
RUDE = (
    "Why would you even ask me that?",
    "Figure it out yourself.",
    "That is a ridiculous question.",
    "Ugh, look it up yourself, I'm not your personal search engine.",
    "Seriously? Everyone knows this already.",
    "Stop wasting my time with questions like this.",
    "Do your own homework for once.",
    "I can't believe you don't know this.",
    "What a boring question.",
    "Honestly, go ask somebody who cares.",
)


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
