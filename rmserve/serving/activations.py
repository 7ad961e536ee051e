"""The engine's activations, the memory bound's term for what running batches hold
(docs/guides/operations.md#the-memory-formula; the rest of the bound is ``memory_budget``).

A batch of ``tokens`` padded tokens, each row padded to ``length``, holds about

    (ACTIVATION_CONSTANT x activation_width(shape, length) + retained_kv_width(shape))
        x tokens x bytes per element

where the width is what one layer keeps alive at its peak: the residual stream and its
normalised copy, the attention's input and output (4 x hidden), the Q, K and V projections, and
the MLP's gate, up and gated product (3 x its width); where the attention is materialised
(MatMul, Softmax, MatMul: an eager export) it also holds its scores and probabilities, 2 x heads
x length per token (quadratic in length; 2 x heads x chunk with an ``attention_query_chunk``).
A fused ``GroupQueryAttention`` (the 'ort-gqa' export) holds no [length, length] scores, on the
CPU as on CUDA. onnxruntime frees a layer's working tensors before the next needs its own; the
constant covers what else is alive (the embedding output, the arena's rounding of its blocks)
and was measured by ``bench/activation_memory.py``.

What is not freed: a fused attention's ``present_key`` / ``present_value`` outputs (declared so
that the CPU kernel holds no scores, ``rmserve_training/export/fused_attention.py``) are
consumed by nothing and stay alive until the run ends, every layer's: ``retained_kv_width`` =
layers x 2 x kv_heads x head_dim per token, exactly the tensors' size (bench: each layer adds
1.00-1.08 x that to a batch's peak). For Qwen3-0.6B (28 layers) that is 229 KB per fp32 token,
more than the working-set term. A materialised attention's K and V are read by its MatMuls and
freed with the layer: its memory does not grow with layers.

Every engine worker runs one batch at once. At most ``long_slots`` of them run a long batch, an
item alone over max_batch_tokens (``rmserve.batching.batcher``), which is at most a Prefer's two
max-length pairs, one batch of two rows: 2 x max_length tokens; the others at most
max_batch_tokens. On CUDA the activations live in device memory, not in the host memory this
bound is for (the server counts them only on a CPU).
"""

from __future__ import annotations

import math

from rmserve.artifact.manifest import Attention, Manifest, ModelShape
from rmserve.batching.batcher import long_batch_slots

# Bytes per activation element. int8 artifacts are QDQ graphs: activations between the
# quantised MatMuls are fp32.
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 4}
# A batch's peak RSS over the RSS before it, per token x width x bytes per element, as
# bench/activation_memory.py measured it on onnxruntime 1.31's CPU provider (one intra-op
# thread): 1.00-1.16 on a real fused ('ort-gqa') import-hf export, a 2-layer Qwen3 at the 0.6B's
# attention shape, one row of 2k-16k tokens and two rows (a Prefer: the same per token);
# 0.95-1.20 on decoder-shaped graphs with GroupQueryAttention (512-16k tokens); counting the
# scores, at most 1.0 on eager graphs and 1.85 on a random Qwen3 exported eagerly by import-hf
# (4k tokens; its masks and casts hold more, rising with length). 2.5 bounds them all: ~2.2x
# the fused export, 1.35x the eager one. These 2-layer runs include 2 layers' retained K/V
# (below); without it the working set is 1.21-1.27 x width on the 0.6B's shape at 2-12 layers.
ACTIVATION_CONSTANT = 2.5
# Manifest ``optimization`` values whose attention is one fused kernel (GroupQueryAttention):
# an artifact without a recorded shape gets a fused estimate when it says one of these.
FUSED_OPTIMIZATIONS = frozenset({"ort-gqa"})
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


def retained_kv_width(shape: ModelShape) -> int:
    """Elements per token that outlive their layer until the run ends: a fused attention's
    present K and V, every layer's (not scaled by ACTIVATION_CONSTANT: they are exactly this big,
    and bench/activation_memory.py measured each layer adding 1.00-1.08 x this to the peak, the
    arena's rounding within the working-set term's margin); none for a materialised one."""
    if shape.attention != "fused":
        return 0
    return shape.num_layers * 2 * shape.kv_heads * shape.head_dim_or_default


def scores_held(shape: ModelShape) -> bool:
    """Whether the attention holds its [heads, length, length] scores: a materialised one does;
    a fused GroupQueryAttention does not (onnxruntime's CPU kernel as its CUDA ones)."""
    return shape.attention == "materialized"


def batch_activation_bytes(shape: ModelShape, dtype: str, tokens: int, length: int) -> int:
    """What one batch of ``tokens`` padded tokens, rows of ``length``, holds while it runs."""
    width = activation_width(shape, length, scores_held(shape))
    per_token = ACTIVATION_CONSTANT * width + retained_kv_width(shape)
    return math.ceil(per_token * tokens * DTYPE_BYTES[dtype])


def assumed_shape(parameters: int, attention: Attention = "materialized") -> ModelShape:
    """A shape for an artifact that records none, from its parameter count; its attention is
    taken as materialised unless the manifest says the export fused it."""
    cube = max(parameters, 1) / PARAMETERS_PER_HIDDEN_CUBED
    hidden = max(HIDDEN_ROUNDING, math.ceil(cube ** (1 / 3) / HIDDEN_ROUNDING) * HIDDEN_ROUNDING)
    return ModelShape(
        hidden_size=hidden,
        intermediate_size=ASSUMED_MLP_RATIO * hidden,
        num_layers=max(1, round(parameters / (12 * hidden * hidden))),
        num_attention_heads=hidden // ASSUMED_HEAD_DIM,
        head_dim=ASSUMED_HEAD_DIM,
        attention=attention,
    )


def model_shape(manifest: Manifest, model_bytes: int) -> ModelShape:
    """The manifest's shape, else ``assumed_shape`` of its parameter count (else of its files'
    bytes at the weights' dtype), fused where its ``optimization`` is in FUSED_OPTIMIZATIONS."""
    if manifest.shape is not None:
        return manifest.shape
    parameters = manifest.parameters or model_bytes // DTYPE_BYTES[manifest.dtype]
    fused = manifest.optimization in FUSED_OPTIMIZATIONS
    return assumed_shape(parameters, "fused" if fused else "materialized")


def activation_bytes(
    shape: ModelShape,
    dtype: str,
    max_length: int,
    max_batch_tokens: int,
    workers: int,
    long_slots: int,
) -> int:
    """The engine's activations at most: ``workers`` batches at once, ``long_slots`` of them
    long (2 x max_length tokens: a Prefer's two max-length pairs), the others max_batch_tokens."""
    long = batch_activation_bytes(shape, dtype, 2 * max_length, max_length)
    short = batch_activation_bytes(
        shape, dtype, max_batch_tokens, min(max_batch_tokens, max_length)
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
) -> int:
    """``activation_bytes`` with the server's settings (``long_batch_workers`` as the setting:
    0 for the batcher's default)."""
    slots = long_batch_slots(workers, long_batch_workers)
    return activation_bytes(shape, dtype, max_length, max_batch_tokens, workers, slots)
