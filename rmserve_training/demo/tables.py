"""Fixed tables behind the demo preference set (capitals, facts, tasks; concepts and phrases in
``demo_concepts``): every split draws from the same facts, so a small model can memorise them."""

from __future__ import annotations

from typing import NamedTuple


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
