"""Write a traced ONNX graph into an artifact folder as ``model.onnx`` (+ ``model.onnx.data``).

Weights above ``SIZE_THRESHOLD`` bytes go into ONE external-data file beside ``model.onnx`` when
asked for, or when they would not fit in a protobuf comfortably (the hard limit is 2 GiB).
fp32 weights are streamed tensor by tensor from wherever the trace left them (torch writes one
file per tensor for models over 2 GiB), so no copy of all weights is held in memory; an fp16
conversion holds the fp32 graph once and converts it in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from rmserve.artifact.manifest import MODEL_FILE, WEIGHTS_FILE

Dtype = Literal["fp32", "fp16"]
SIZE_THRESHOLD = 1024  # bytes; smaller tensors stay inside model.onnx (onnx's own default)
AUTO_EXTERNAL_BYTES = 1 << 30  # weights above 1 GiB always go to the external-data file
ALIGNMENT = 4096  # each tensor starts on a page boundary in the weights file
COPY_BLOCK = 1 << 24


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor-valued node attributes, subgraphs included."""

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    yield from graph_tensors(attribute.g)
                for sub in attribute.graphs:
                    yield from graph_tensors(sub)

    yield from graph_tensors(model.graph)


def weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for tensor in all_tensors(model):
        if uses_external_data(tensor):
            total += ExternalDataInfo(tensor).length or 0
        else:
            total += len(tensor.raw_data)
    return total


def _copy_range(source: Path, offset: int, length: int | None, out: BinaryIO) -> int:
    copied = 0
    with source.open("rb") as f:
        f.seek(offset)
        while length is None or copied < length:
            block = f.read(COPY_BLOCK if length is None else min(COPY_BLOCK, length - copied))
            if not block:
                break
            out.write(block)
            copied += len(block)
    if length is not None and copied != length:
        raise OSError(f"{source}: external data ends after {copied} of {length} bytes")
    return copied


def _externalize(model: onnx.ModelProto, source_dir: Path, folder: Path) -> None:
    with (folder / WEIGHTS_FILE).open("wb") as out:
        for tensor in all_tensors(model):
            external = uses_external_data(tensor)
            if not external and len(tensor.raw_data) < SIZE_THRESHOLD:
                continue
            pad = -out.tell() % ALIGNMENT
            out.write(b"\0" * pad)
            offset = out.tell()
            if external:
                info = ExternalDataInfo(tensor)
                length = _copy_range(source_dir / info.location, info.offset or 0, info.length, out)
                del tensor.external_data[:]
            else:
                length = len(tensor.raw_data)
                out.write(tensor.raw_data)
                tensor.ClearField("raw_data")
            for key, value in (("location", WEIGHTS_FILE), ("offset", offset), ("length", length)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted: onnx.ModelProto = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=True
    )
    return converted


def write_model(source: Path, folder: Path, dtype: Dtype, external_data: bool) -> list[str]:
    """Write ``source`` (and any external data beside it) into ``folder`` under the artifact's
    file names; returns the names written."""
    source_dir = source.parent
    model: Any = onnx.load(str(source), load_external_data=dtype == "fp16")
    if dtype == "fp16":
        model = _to_fp16(model)
    big = weight_bytes(model) > AUTO_EXTERNAL_BYTES
    if external_data or big or any(uses_external_data(t) for t in all_tensors(model)):
        _externalize(model, source_dir, folder)
        onnx.save_model(model, str(folder / MODEL_FILE))
        return [MODEL_FILE, WEIGHTS_FILE]
    onnx.save_model(model, str(folder / MODEL_FILE))
    return [MODEL_FILE]
