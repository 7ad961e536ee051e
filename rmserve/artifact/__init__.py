"""The artifact: the only thing that crosses from training to serving. The manifest (a
pydantic model that training imports too), file hashes, and which files an ONNX model loads.

May import: nothing of rmserve (pydantic and the standard library only).
"""
