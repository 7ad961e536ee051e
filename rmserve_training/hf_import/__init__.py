"""``rmserve import-hf``: a local Hugging Face sequence-classification reward model → an
artifact, with its chat template proven on probe conversations.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
