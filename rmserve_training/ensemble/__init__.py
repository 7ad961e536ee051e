"""Ensembles: K full members or one shared backbone with K heads, combined into one
artifact whose graph scores every member.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
