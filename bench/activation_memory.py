"""The engine's activation memory per token, measured: the constant of the memory formula's
activation term (rmserve/serving/activations.py, docs/guides/operations.md#the-memory-formula).

Builds small decoder-shaped ONNX graphs (token embedding; per layer: LayerNormalization, Q/K/V
projections, attention, output projection, residual; LayerNormalization, SiLU-gated MLP,
residual; the last token's hidden state to one reward) with the attention as onnxruntime's fused
``MultiHeadAttention`` or ``GroupQueryAttention`` (com.microsoft), or materialised (MatMul,
Softmax, MatMul: the [B, heads, L, L] scores an eager export holds). Each (graph, length) runs in
a fresh process on the CPU provider, one intra-op thread: the session is made and run once on 16
tokens, the peak RSS is reset (``/proc/self/clear_refs``), then one batch of ``length`` tokens
runs; reported are its peak RSS over the RSS before it, and that per padded token over the
formula's activation width (``rmserve.serving.activations.activation_width``, with and without
the attention's [heads, L, L] scores) x bytes per element.

``GroupQueryAttention`` is built as the fused export builds it, its present_key / present_value
outputs declared: onnxruntime 1.31's CPU kernel given only its first output holds the [heads, L,
L] scores (``gqa-no-present``, kept to show it), with them it does not.

``--artifact`` also measures a real artifact's ``model.onnx`` the same way, with one row and with
two (a Prefer's two pairs form one batch):

    .venv/bin/python bench/activation_memory.py --artifact ARTIFACT --artifact-shape JSON \
        --out bench/results/activation-memory-cpu.json

``--layers`` builds each shape at several layer counts (``--shapes q06b --layers 2,6,12``: a
fused layer's present K/V stays alive to the run's end, so the peak grows with layers):

    .venv/bin/python bench/activation_memory.py --shapes q06b --layers 2,6,12 --kinds gqa \
        --lengths 8192 --exported-max-length 0 --out bench/results/activation-memory-layers-cpu.json

Attentions whose memory is quadratic are measured only up to ``--quadratic-max-length``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_record import add_record_arguments, finish_record, start_record

from rmserve.artifact.manifest import ModelShape
from rmserve.serving.activations import activation_width

SHAPES = {
    "h256": ModelShape(
        hidden_size=256, intermediate_size=768, num_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, attention="fused",
    ),
    "h512": ModelShape(
        hidden_size=512, intermediate_size=1536, num_layers=2, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, attention="fused",
    ),
    # Qwen3-0.6B's widths and attention (its 28 layers via --layers)
    "q06b": ModelShape(
        hidden_size=1024, intermediate_size=3072, num_layers=2, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, attention="fused",
    ),
}  # fmt: skip
# gqa: GroupQueryAttention (causal) with its present_key / present_value outputs declared, as
# rmserve import-hf's fused export declares them; gqa-no-present: the same node with only its
# first output, which onnxruntime 1.31's CPU kernel runs holding the [heads, L, L] scores;
# mha-causal: MultiHeadAttention unidirectional=1; onnx-attention: the ONNX Attention op (opset
# 23) is_causal=1; mha-flash: MultiHeadAttention without a mask, NOT causal (so not a decoder's
# attention), for reference; eager: MatMul, Softmax, MatMul.
KINDS = ("gqa", "gqa-no-present", "mha-causal", "onnx-attention", "mha-flash", "eager")
QUADRATIC_KINDS = ("gqa-no-present", "mha-causal", "onnx-attention", "eager")
VOCAB = 512


def build(shape: ModelShape, kind: str, path: Path) -> None:
    """A decoder-shaped graph of ``shape`` with ``kind`` attention, random fp32 weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    h, i = shape.hidden_size, shape.intermediate_size
    d, heads = shape.head_dim_or_default, shape.num_attention_heads
    kv = heads if kind.startswith("mha") else shape.kv_heads
    inits: list[Any] = []
    nodes: list[Any] = []

    def weight(name: str, *dims: int) -> str:
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(dims) * 0.02).astype(np.float32), name))  # fmt: skip
        return name

    def const(name: str, value: Any, dtype: Any) -> str:
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], out: str | list[str], domain: str = "",
             **attrs: Any) -> str:  # fmt: skip
        outs = [out] if isinstance(out, str) else out
        nodes.append(helper.make_node(op, inputs, outs, domain=domain, **attrs))
        return outs[0]

    x = node("Gather", [weight("embed", VOCAB, h), "input_ids"], "x0")
    ones = const("ones", np.ones(h), np.float32)
    zeros = const("zeros", np.zeros(h), np.float32)
    for layer in range(shape.num_layers):
        p = f"l{layer}_"
        n1 = node("LayerNormalization", [x, ones, zeros], p + "n1", axis=-1)
        q = node("MatMul", [n1, weight(p + "wq", h, heads * d)], p + "q")
        k = node("MatMul", [n1, weight(p + "wk", h, kv * d)], p + "k")
        v = node("MatMul", [n1, weight(p + "wv", h, kv * d)], p + "v")
        a = attention(kind, q, k, v, heads, kv, d, p, node, const)
        o = node("MatMul", [a, weight(p + "wo", heads * d, h)], p + "o")
        x = node("Add", [x, o], p + "r1")
        n2 = node("LayerNormalization", [x, ones, zeros], p + "n2", axis=-1)
        gate = node("MatMul", [n2, weight(p + "wg", h, i)], p + "gate")
        up = node("MatMul", [n2, weight(p + "wu", h, i)], p + "up")
        act = node("Mul", [gate, node("Sigmoid", [gate], p + "sig")], p + "silu")
        down = node(
            "MatMul", [node("Mul", [act, up], p + "gated"), weight(p + "wd", i, h)], p + "down"
        )
        x = node("Add", [x, down], p + "r2")
    last = node("Gather", [x, const("last", -1, np.int64)], "last_hidden", axis=1)
    node("MatMul", [last, weight("head", h, 1)], "scores")
    node("Squeeze", ["scores", const("axis", [1], np.int64)], "rewards")
    graph = helper.make_graph(
        nodes, f"decoder-{kind}",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("rewards", TensorProto.FLOAT, ["batch"])],
        inits,
    )  # fmt: skip
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    onnx.save(model, path)


def attention(kind: str, q: str, k: str, v: str, heads: int, kv: int, d: int, p: str,
              node: Any, const: Any) -> str:  # fmt: skip
    """[B, S, heads x d] from projections; causal."""
    if kind in ("mha-causal", "mha-flash"):
        return node("MultiHeadAttention", [q, k, v], p + "attn", domain="com.microsoft",
                    num_heads=heads, unidirectional=int(kind == "mha-causal"))  # fmt: skip
    if kind == "onnx-attention":
        return node("Attention", [q, k, v], p + "attn", q_num_heads=heads, kv_num_heads=kv,
                    is_causal=1)  # fmt: skip
    if kind.startswith("gqa"):
        # one sequence of S tokens and no cache: seqlens_k = S - 1, total length S
        shape = node("Shape", [q], p + "qshape")
        length = node("Gather", [shape, const(p + "one", 1, np.int64)], p + "len")
        total = node("Cast", [length], p + "total", to=6)
        total1 = node("Unsqueeze", [total, const(p + "ax0", [0], np.int64)], p + "total1")
        seqlens = node("Sub", [total1, const(p + "i1", [1], np.int32)], p + "seqlens")
        inputs = [q, k, v, "", "", seqlens, total]
        # The present outputs are never read, but whether they are declared decides whether the
        # CPU kernel holds the scores (the bench's first version left them out and measured
        # quadratic memory that the exported artifacts do not have).
        outputs = [p + "attn"] + ([p + "present_k", p + "present_v"] if kind == "gqa" else [])
        return str(
            node(
                "GroupQueryAttention", inputs, outputs, domain="com.microsoft",
                num_heads=heads, kv_num_heads=kv,
            )
        )  # fmt: skip
    # materialised: softmax(q k^T / sqrt(d)) v over [B, heads, S, S]
    split = const(p + "split", [0, 0, heads, d], np.int64)
    qh = node("Transpose", [node("Reshape", [q, split], p + "q4")], p + "qh", perm=[0, 2, 1, 3])
    kv_split = const(p + "kvsplit", [0, 0, kv, d], np.int64)
    kh = node("Transpose", [node("Reshape", [k, kv_split], p + "k4")], p + "kh", perm=[0, 2, 3, 1])
    vh = node("Transpose", [node("Reshape", [v, kv_split], p + "v4")], p + "vh", perm=[0, 2, 1, 3])
    if kv != heads:  # repeat kv heads (what an eager export does)
        reps = const(p + "reps", [1, heads // kv, 1, 1], np.int64)
        kh, vh = node("Tile", [kh, reps], p + "kt"), node("Tile", [vh, reps], p + "vt")
    scale = const(p + "scale", 1 / np.sqrt(d), np.float32)
    scores = node("Mul", [node("MatMul", [qh, kh], p + "qk"), scale], p + "scores")
    probs = node("Softmax", [scores], p + "probs", axis=-1)
    out = node("Transpose", [node("MatMul", [probs, vh], p + "pv")], p + "pvt", perm=[0, 2, 1, 3])
    return str(node("Reshape", [out, const(p + "merge", [0, 0, heads * d], np.int64)], p + "attn"))


def graph_shape(shape: ModelShape, kind: str) -> ModelShape:
    """The shape the graph of ``kind`` really has (MHA has as many K/V heads as heads)."""
    update: dict[str, Any] = {"attention": "materialized" if kind == "eager" else "fused"}
    if kind.startswith("mha"):
        update["num_key_value_heads"] = shape.num_attention_heads
    return shape.model_copy(update=update)


CHILD = r"""
import json, sys
import numpy as np, onnxruntime as ort

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def feed(length, rows=1):
    values = {"input_ids": np.ones((rows, length), np.int64),
              "attention_mask": np.ones((rows, length), np.int64),
              "token_type_ids": np.zeros((rows, length), np.int64),
              "position_ids": np.tile(np.arange(length, dtype=np.int64), (rows, 1))}
    return {i.name: values[i.name] for i in session.get_inputs()}

path, length, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
session.run(None, feed(16))
open("/proc/self/clear_refs", "w").write("5")
before = rss("VmRSS:")
session.run(None, feed(length, rows))
print(json.dumps({"before": before, "peak": rss("VmHWM:"), "after": rss("VmRSS:")}))
"""
# A random Qwen3 of the h256 graphs' shape, through the real export (``rmserve import-hf``).
QWEN3_H256 = {
    "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 8192,
}  # fmt: skip


def exported_qwen3(folder: Path, max_length: int) -> tuple[Path, ModelShape]:
    """``rmserve import-hf`` of a random Qwen3 (tests/support/qwen3_rm.py); its model.onnx and
    shape (its attention as the export made it: today an eager one)."""
    from tests.support.qwen3_rm import write_qwen3_rm

    write_qwen3_rm(folder / "hf", **QWEN3_H256)
    artifact = folder / "artifact"
    command = [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(folder / "hf"),
               "--out", str(artifact), "--max-length", str(max_length)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    shape = SHAPES["h256"].model_copy(update={"attention": "materialized"})
    return artifact / "model.onnx", shape


def layered_shapes(names: str, layers: str) -> list[tuple[str, ModelShape]]:
    """Each named shape, at each of the ``layers`` counts (named ``NAME-lN``) if any given."""
    shapes = [(name, SHAPES[name]) for name in names.split(",")]
    if not layers:
        return shapes
    counts = [int(n) for n in layers.split(",")]
    return [(f"{name}-l{n}", shape.model_copy(update={"num_layers": n}))
            for name, shape in shapes for n in counts]  # fmt: skip


def measure_one(model: Path, length: int, rows: int) -> dict[str, int]:
    command = [sys.executable, "-c", CHILD, str(model), str(length), str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{model.name} at {length} tokens failed:\n{done.stderr[-3000:]}")
    figures: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def run_row(name: str, kind: str, shape: ModelShape, model: Path, length: int,
            rows: int = 1) -> dict[str, Any]:  # fmt: skip
    """One batch of ``rows`` rows of ``length`` tokens (a Prefer's two pairs: rows=2)."""
    got = measure_one(model, length, rows)
    delta, tokens = got["peak"] - got["before"], rows * length
    linear = activation_width(shape, length, scores_held=False)
    quadratic = activation_width(shape, length, scores_held=True)
    row = {"shape": name, "attention": kind, "layers": shape.num_layers, "rows": rows,
           "length": length, "tokens": tokens,
           **got, "peak_over_before_bytes": delta, "bytes_per_token": delta / tokens,
           "width_linear": linear, "width_with_scores": quadratic,
           "constant_linear": delta / (tokens * linear * 4),
           "constant_with_scores": delta / (tokens * quadratic * 4)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def artifact_rows(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The artifact's record and its rows: each length at each of ``--artifact-rows``."""
    manifest = json.loads((args.artifact / "manifest.json").read_text())
    shape = args.artifact_shape or ModelShape.model_validate(manifest["shape"])
    name, kind = f"artifact:{manifest['name']}", manifest["optimization"]
    rows = []
    for n in (int(n) for n in args.artifact_rows.split(",")):
        for length in (int(n) for n in args.artifact_lengths.split(",")):
            rows.append(run_row(name, kind, shape, args.artifact / "model.onnx", length, n))
    record = {
        "path": str(args.artifact), "optimization": manifest["optimization"],
        "max_length": manifest["preprocessing"]["max_length"],
        "parameters": manifest["parameters"], "files": manifest["files"],
        "shape": shape.model_dump(),
    }  # fmt: skip
    return record, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument(
        "--quadratic-max-length", type=int, default=4096,
        help="longest run of the attention kinds whose memory is quadratic in length",
    )  # fmt: skip
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--exported-max-length", type=int, default=4096,
        help="also measure a random Qwen3 of the h256 shape exported by import-hf at this "
        "max_length (0: not)",
    )  # fmt: skip
    parser.add_argument("--shapes", default="h256,h512")
    parser.add_argument(
        "--layers", default="",
        help="comma-separated layer counts to build each shape with (default: the shape's, 2)",
    )  # fmt: skip
    parser.add_argument(
        "--artifact", type=Path,
        help="also measure this artifact's model.onnx (fp32), e.g. a fused import-hf export",
    )  # fmt: skip
    parser.add_argument(
        "--artifact-shape", type=ModelShape.model_validate_json,
        help="the artifact's ModelShape as JSON (else its manifest's shape)",
    )  # fmt: skip
    parser.add_argument("--artifact-lengths", default="2048,4096,8192,16384")
    parser.add_argument(
        "--artifact-rows", default="1,2",
        help="rows per batch for the artifact (2: a Prefer's two pairs, one batch)",
    )  # fmt: skip
    add_record_arguments(parser, duration=0.0)
    args = parser.parse_args()
    record = start_record(args)
    lengths = [int(n) for n in args.lengths.split(",")]
    rows: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="activation-models-"))
    for name, shape in layered_shapes(args.shapes, args.layers):
        for kind in args.kinds.split(","):
            model = folder / f"{name}-{kind}.onnx"
            build(shape, kind, model)
            for length in lengths:
                if kind in QUADRATIC_KINDS and length > args.quadratic_max_length:
                    continue
                rows.append(run_row(name, kind, graph_shape(shape, kind), model, length))
            model.unlink()
    if args.exported_max_length:
        model, shape = exported_qwen3(folder / "qwen3", args.exported_max_length)
        for length in lengths:
            if length > min(args.exported_max_length, args.quadratic_max_length):
                continue
            rows.append(run_row("qwen3-h256-import-hf", "export", shape, model, length))
    shutil.rmtree(folder, ignore_errors=True)
    figures: dict[str, Any] = {"shapes": {k: v.model_dump() for k, v in SHAPES.items()}}
    if args.artifact:
        figures["artifact"], measured = artifact_rows(args)
        rows.extend(measured)
    figures["runs"] = rows
    finish_record(record, args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
