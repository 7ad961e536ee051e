"""``rmserve quantize``: a static int8 artifact, written only when it passes its gates.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
