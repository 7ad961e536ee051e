"""Torch scorer → ONNX → validated artifact folder, and the export check against the fp32
model.

May import: ``rmserve`` and the ``rmserve_training`` packages below it.
"""
