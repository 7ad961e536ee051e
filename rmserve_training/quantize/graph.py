"""Graph surgery on the quantiser's output.

onnxruntime's QDQ quantiser puts one Quantize/Dequantize pair on an activation and routes every
consumer through it. In a BERT block the LayerNorm output feeds both the FFN MatMul and the
residual of the next LayerNorm, so the residual would be rounded to int8 too (an accuracy loss
no one asked for) and the Dequantize with two consumers stops onnxruntime fusing the MatMul
into MatMulIntegerToFloat (a speed loss). Here every consumer that is not quantised reads the
fp32 tensor again.

onnxruntime's fused ``Attention`` op holds the Q/K/V projection inside it, out of the
quantiser's reach (its QDQ registry has no Attention). ``unfuse_attention`` splits it into the
projection (a MatMul, which is quantised) and ``MultiHeadAttention`` on the projected Q, K, V
with the same bias and the attention mask (fp32, as before).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attention_mask(graph: onnx.GraphProto) -> str | None:
    """The int32 [batch, length] attention mask the embedding layer reads, if fused."""
    for node in graph.node:
        if node.op_type == "EmbedLayerNormalization" and len(node.input) > 7 and node.input[7]:
            return node.input[7]
    return None


def unfuse_attention(model: onnx.ModelProto) -> int:
    """Replace each fused ``Attention`` (input, weights, bias, mask_index) by MatMul → Split →
    MultiHeadAttention(q, k, v, bias, key_padding_mask). Returns how many were replaced; none
    when the graph has no fused attention or its mask cannot be found."""
    graph = model.graph
    mask = _attention_mask(graph)
    attention = [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]
    if mask is None or not attention:
        return 0
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node not in attention:
            nodes.append(node)
            continue
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        x, weights, bias = node.input[0], node.input[1], node.input[2]
        hidden = int(numpy_helper.to_array(initializers[weights]).shape[1]) // 3
        qkv, sizes = f"{node.name}_qkv", f"{node.name}_qkv_sizes"
        q, k, v = (f"{node.name}_{part}" for part in "qkv")
        graph.initializer.append(numpy_helper.from_array(np.full(3, hidden, np.int64), sizes))
        nodes += [
            helper.make_node("MatMul", [x, weights], [qkv], name=f"{node.name}_MatMul"),
            helper.make_node("Split", [qkv, sizes], [q, k, v], name=f"{node.name}_Split", axis=-1),
            helper.make_node(
                "MultiHeadAttention", [q, k, v, bias, mask], list(node.output),
                name=f"{node.name}_MHA", domain="com.microsoft", num_heads=heads,
            ),
        ]  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)
    return len(attention)


def fp32_for_unquantized_consumers(model: onnx.ModelProto, quantized_ops: Iterable[str]) -> int:
    """Rewire consumers outside ``quantized_ops`` from an activation's Q→DQ pair to the fp32
    tensor; drop the pairs left unused. Returns how many inputs were rewired."""
    ops = set(quantized_ops) | {"QuantizeLinear", "DequantizeLinear"}
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    fp32_of: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantize = producer.get(node.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            fp32_of[node.output[0]] = quantize.input[0]
    rewired = 0
    for node in graph.node:
        if node.op_type in ops:
            continue
        for i, name in enumerate(node.input):
            if name in fp32_of:
                node.input[i] = fp32_of[name]
                rewired += 1
    _drop_unused_pairs(graph)
    return rewired


def _drop_unused_pairs(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unused = [
            node
            for node in graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(out in read for out in node.output)
        ]
        if not unused:
            return
        for node in unused:
            graph.node.remove(node)


def rewire_file(path: Path, quantized_ops: Iterable[str]) -> int:
    model = onnx.load(str(path))
    rewired = fp32_for_unquantized_consumers(model, quantized_ops)
    onnx.save(model, str(path))
    return rewired
