"""The scoring engine: an onnxruntime session over an artifact, its execution providers, the
CUDA probe, the feed built from prepared pairs, and how CPU threads are split between batches
that run at once. No torch, no protocol, no queue.

May import: ``rmserve.artifact``, ``rmserve.text``.
"""
