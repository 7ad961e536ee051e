"""Which files an ONNX model loads as external data, read from the protobuf wire format.

The server has no ``onnx`` package; this walks just the fields that can hold a tensor
(``TensorProto.external_data`` entries whose key is ``location``) and skips everything else by
its length, over a memory map, so a large inline ``model.onnx`` is never copied into memory.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# message -> {field number: message type of that field}; only paths that can reach a tensor.
_SCHEMA: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "TrainingInfo", 25: "Function"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Function": {7: "Node", 11: "Attribute"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Attribute": {
        5: "Tensor",
        6: "Graph",
        10: "Tensor",
        11: "Graph",
        22: "SparseTensor",
        23: "SparseTensor",
    },
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "Tensor": {13: "Entry"},
}
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxFormatError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _walk(data: mmap.mmap | bytes, kind: str, pos: int, end: int, found: set[str]) -> None:
    children = _SCHEMA.get(kind, {})
    key = value = None
    while pos < end:
        tag, pos = _varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            _, pos = _varint(data, pos, end)
        elif wire == _WIRE_I64:
            pos += 8
        elif wire == _WIRE_I32:
            pos += 4
        elif wire == _WIRE_LEN:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise OnnxFormatError("a field runs past the end of its message")
            if kind == "Entry" and field in (1, 2):
                text = bytes(data[pos : pos + length]).decode("utf-8", errors="replace")
                key, value = (text, value) if field == 1 else (key, text)
            elif field in children:
                _walk(data, children[field], pos, pos + length, found)
            pos += length
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
    if pos != end:
        raise OnnxFormatError("a field runs past the end of its message")
    if kind == "Entry" and key == "location" and value is not None:
        found.add(value)


def external_data_locations(path: Path) -> set[str]:
    """The ``location`` of every external-data tensor in the model file, as written there
    (relative to the model's folder)."""
    found: set[str] = set()
    with path.open("rb") as f:
        if path.stat().st_size == 0:
            return found
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk(data, "Model", 0, len(data), found)
    return found
