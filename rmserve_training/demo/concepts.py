"""The demo's explain-a-concept and translate-a-phrase tables (see ``demo_tables``)."""

from __future__ import annotations

from typing import NamedTuple


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
