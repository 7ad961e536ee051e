"""The engine's activations, the memory bound's term for what running batches hold
(docs/guides/operations.md#the-memory-formula; the rest of the bound is ``memory_budget``).

A batch of ``tokens`` padded tokens, each row padded to ``length``, holds about

    ACTIVATION_CONSTANT x tokens x activation_width(shape, length) x bytes per element

where the width is what one layer keeps alive at its peak: the residual stream and its
normalised copy, the attention's input and output (4 x hidden), the Q, K and V projections, and
the MLP's gate, up and gated product (3 x its width); where the attention holds its scores and
probabilities, also 2 x heads x length per token (quadratic in length; 2 x heads x chunk with an
``attention_query_chunk``). onnxruntime frees a
layer's tensors before the next needs its own, so the layer count does not enter; the constant
covers what else is alive (the embedding output, the arena's rounding of its blocks) and was
measured on decoder-shaped graphs by ``bench/activation_memory.py``.

Every engine worker runs one batch at once. At most ``long_slots`` of them run a long batch, an
item alone over max_batch_tokens (``rmserve.batching.batcher``), which is at most a Prefer's two
max-length pairs: 2 x max_length tokens; the others at most max_batch_tokens. On CUDA the
activations live in device memory, not in the host memory this bound is for.
"""

from __future__ import annotations

import math

from rmserve.artifact.manifest import Manifest, ModelShape
from rmserve.batching.batcher import long_batch_slots

# Bytes per activation element. int8 artifacts are QDQ graphs: activations between the
# quantised MatMuls are fp32.
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 4}
# A batch's peak RSS over the RSS before it, per token x width x bytes per element, as
# bench/activation_memory.py measured it on onnxruntime 1.31's CPU provider: at most 1.12 on
# decoder-shaped graphs with flash attention (linear: 512-16k tokens), at most 1.0 with causal
# fused kernels or eager attention (scores counted: 512-4k tokens), and 1.85 on a random Qwen3
# exported by `rmserve import-hf` (eager attention; its masks and casts hold more) at 4k tokens.
ACTIVATION_CONSTANT = 2.5
# onnxruntime 1.31's CPU kernels for causal attention (GroupQueryAttention, MultiHeadAttention
# with unidirectional=1, the ONNX Attention op with is_causal=1) hold the [batch, heads, length,
# length] probabilities: their peak grew 3.5-3.9x per doubling of length
# (bench/activation_memory.py). Only MultiHeadAttention without a mask, which is not causal,
# runs flash attention there. On CUDA the fused kernels are flash / memory-efficient.
CPU_CAUSAL_ATTENTION_HOLDS_SCORES = True
# An unknown shape's heads are taken 32 wide (MiniLM's; most models' are 64-128): more heads,
# more scores held, so the estimate errs high.
ASSUMED_HEAD_DIM = 32
HIDDEN_ROUNDING = 64
ASSUMED_MLP_RATIO = 4
# A transformer's parameters are about 12 x layers x hidden^2, and models keep layers near
# hidden / 64 (BERT-base 768 / 12, MiniLM 384 / 6; Qwen3-0.6B 1024 / 28, Llama-3-8B 4096 / 32):
# hidden ~ (64 / 12 x parameters)^(1/3). It overestimates small models (their embeddings count
# as parameters) and slightly underestimates wide ones, whose MLP ratio it overestimates.
PARAMETERS_PER_HIDDEN_CUBED = 12 / 64


def activation_width(shape: ModelShape, length: int, scores_held: bool) -> int:
    """Elements per token one layer keeps alive at its peak, rows padded to ``length``;
    ``scores_held``: the attention holds its [heads, length, length] scores and probabilities."""
    head_dim = shape.head_dim_or_default
    projections = (shape.num_attention_heads + 2 * shape.kv_heads) * head_dim
    width = 4 * shape.hidden_size + projections + 3 * shape.intermediate_size
    if scores_held:
        queries = min(length, shape.attention_query_chunk or length)
        width += 2 * shape.num_attention_heads * queries
    return width


def scores_held(shape: ModelShape, on_cpu: bool) -> bool:
    """Whether the attention holds its scores: a materialised one always; a fused kernel on
    onnxruntime's CPU provider too (``CPU_CAUSAL_ATTENTION_HOLDS_SCORES``)."""
    return shape.attention == "materialized" or (on_cpu and CPU_CAUSAL_ATTENTION_HOLDS_SCORES)


def batch_activation_bytes(
    shape: ModelShape, dtype: str, tokens: int, length: int, on_cpu: bool = True
) -> int:
    """What one batch of ``tokens`` padded tokens, rows of ``length``, holds while it runs."""
    width = activation_width(shape, length, scores_held(shape, on_cpu))
    return math.ceil(ACTIVATION_CONSTANT * tokens * width * DTYPE_BYTES[dtype])


def assumed_shape(parameters: int) -> ModelShape:
    """A shape for an artifact that records none, from its parameter count; attention is taken
    as materialised (what exports without the fused kernel hold)."""
    cube = max(parameters, 1) / PARAMETERS_PER_HIDDEN_CUBED
    hidden = max(HIDDEN_ROUNDING, math.ceil(cube ** (1 / 3) / HIDDEN_ROUNDING) * HIDDEN_ROUNDING)
    return ModelShape(
        hidden_size=hidden,
        intermediate_size=ASSUMED_MLP_RATIO * hidden,
        num_layers=max(1, round(parameters / (12 * hidden * hidden))),
        num_attention_heads=hidden // ASSUMED_HEAD_DIM,
        head_dim=ASSUMED_HEAD_DIM,
        attention="materialized",
    )


def model_shape(manifest: Manifest, model_bytes: int) -> ModelShape:
    """The manifest's shape, else ``assumed_shape`` of its parameter count (else of its files'
    bytes at the weights' dtype)."""
    if manifest.shape is not None:
        return manifest.shape
    parameters = manifest.parameters or model_bytes // DTYPE_BYTES[manifest.dtype]
    return assumed_shape(parameters)


def activation_bytes(
    shape: ModelShape,
    dtype: str,
    max_length: int,
    max_batch_tokens: int,
    workers: int,
    long_slots: int,
    on_cpu: bool = True,
) -> int:
    """The engine's activations at most: ``workers`` batches at once, ``long_slots`` of them
    long (2 x max_length tokens: a Prefer's two max-length pairs), the others max_batch_tokens.
    ``on_cpu``: on onnxruntime's CPU provider (else CUDA: device memory)."""
    long = batch_activation_bytes(shape, dtype, 2 * max_length, max_length, on_cpu)
    short = batch_activation_bytes(
        shape, dtype, max_batch_tokens, min(max_batch_tokens, max_length), on_cpu
    )
    long_slots = min(long_slots, workers)
    return long_slots * max(long, short) + (workers - long_slots) * short


def engine_activation_bytes(
    shape: ModelShape,
    dtype: str,
    max_length: int,
    max_batch_tokens: int,
    workers: int,
    long_batch_workers: int,
    on_cpu: bool,
) -> int:
    """``activation_bytes`` with the server's settings (``long_batch_workers`` as the setting:
    0 for the batcher's default)."""
    slots = long_batch_slots(workers, long_batch_workers)
    return activation_bytes(shape, dtype, max_length, max_batch_tokens, workers, slots, on_cpu)
