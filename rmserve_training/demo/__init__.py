"""The deterministic synthetic preference sets for the demo and the tests.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
