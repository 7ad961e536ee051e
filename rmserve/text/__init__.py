"""Text to token ids: the pair preprocessing that training and serving share, chat
templates replayed without Jinja, windows over very long texts, conversations, and the
preference-file formats.

May import: ``rmserve.artifact``.
"""
