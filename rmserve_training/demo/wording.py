"""How demo answers are worded around their content: openers, closers, refusals, rudeness and
changes of subject, shared by every question family."""

from __future__ import annotations

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
