"""Reward arithmetic, pure numpy: the one stable sigmoid, ensemble normalisation and
aggregation, and a GRPO group's statistics.

May import: nothing of rmserve.
"""
