"""rmserve_training: train, export, import, combine and quantize reward models (the ``train``
extra: torch, transformers, onnx). It joins the ``rmserve`` command through the
``rmserve.commands`` entry point (``commands.py``).

Packages, top to bottom: ``ensemble`` | ``quantize`` | ``hf_import``; ``train``; ``export``;
``model``; ``settings`` | ``demo``. May import: ``rmserve`` (never the reverse) and the
packages below it.
"""
