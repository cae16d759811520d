"""What can be known about an ONNX file without the onnx package (the serving image does not install it): the IR
version and opsets it is stamped with, read from its protobuf header, and the newest of each this onnxruntime loads,
probed from it with a one-node graph (onnxruntime publishes neither number).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnxruntime as ort

MODEL_PROTO_IR_VERSION = 1
MODEL_PROTO_OPSET_IMPORT = 8
# onnxruntime's element types -> (v2 datatype, numpy dtype name). Strings, bfloat16 and complex types are not served.
ORT_TYPES = {
    "tensor(bool)": ("BOOL", "bool"), "tensor(uint8)": ("UINT8", "uint8"), "tensor(uint16)": ("UINT16", "uint16"),
    "tensor(uint32)": ("UINT32", "uint32"), "tensor(uint64)": ("UINT64", "uint64"), "tensor(int8)": ("INT8", "int8"),
    "tensor(int16)": ("INT16", "int16"), "tensor(int32)": ("INT32", "int32"), "tensor(int64)": ("INT64", "int64"),
    "tensor(float16)": ("FP16", "float16"), "tensor(float)": ("FP32", "float32"), "tensor(double)": ("FP64", "float64"),
}


@dataclass(frozen=True)
class SupportedVersions:
    """The newest ONNX format this onnxruntime loads: IR version and default-domain (ai.onnx) opset."""

    runtime: str
    ir_version: int
    opset: int


@dataclass(frozen=True)
class Stamp:
    """What a model file says it needs: its IR version and the opset of each operator domain."""

    ir_version: int
    opsets: dict[str, int]

    @property
    def opset(self) -> int:
        return max((version for domain, version in self.opsets.items() if domain in ("", "ai.onnx")), default=0)

    def newer_than(self, supported: SupportedVersions) -> str | None:
        """A line naming what the runtime loads and how to export for it, when this file is stamped newer."""
        if self.ir_version <= supported.ir_version and self.opset <= supported.opset:
            return None
        target = min(self.opset, supported.opset)
        return (f"the file has IR version {self.ir_version} and ai.onnx opset {self.opset}; this server's onnxruntime "
                f"{supported.runtime} loads IR version <= {supported.ir_version} and opset <= {supported.opset}. Export "
                f"for them: torch.onnx.export(..., opset_version={target}), or convert the file with "
                f"onnx.version_converter.convert_version(model, {target}) and set model.ir_version = "
                f"{supported.ir_version} before onnx.save.")


@functools.cache
def supported_versions() -> SupportedVersions:
    """Probed from this onnxruntime with a one-node graph at each version."""
    return SupportedVersions(ort.__version__, _newest_loadable(lambda ir: _identity_graph(ir, 7), range(3, 40)),
                             _newest_loadable(lambda opset: _identity_graph(7, opset), range(7, 60)))


def stamp_of(path: Path) -> Stamp:
    """The IR version and opset imports of an ONNX file, from its top-level protobuf fields; ValueError if it is
    not a protobuf message."""
    data = path.read_bytes()
    ir_version, opsets, offset = 0, {}, 0
    while offset < len(data):
        number, kind, value, offset = _next_field(data, offset)
        if number == MODEL_PROTO_IR_VERSION and kind == 0:
            ir_version = value
        elif number == MODEL_PROTO_OPSET_IMPORT and kind == 2:
            domain, version = _opset_id(value)
            opsets[domain] = version
    return Stamp(ir_version, opsets)


def _opset_id(message: bytes) -> tuple[str, int]:
    domain, version, offset = "", 0, 0
    while offset < len(message):
        number, kind, value, offset = _next_field(message, offset)
        if number == 1 and kind == 2:
            domain = value.decode("utf-8", "replace")
        elif number == 2 and kind == 0:
            version = value
    return domain, version


def _next_field(data: bytes, offset: int) -> tuple[int, int, int | bytes, int]:
    """(field number, wire type, value, next offset) of the protobuf field at `offset`."""
    key, offset = _read_varint(data, offset)
    number, kind = key >> 3, key & 7
    if kind == 0:
        value, offset = _read_varint(data, offset)
        return number, kind, value, offset
    if kind == 2:
        length, offset = _read_varint(data, offset)
        if offset + length > len(data):
            raise ValueError("a field runs past the end of the file")
        return number, kind, data[offset : offset + length], offset + length
    if kind in (1, 5):
        size = 8 if kind == 1 else 4
        return number, kind, int.from_bytes(data[offset : offset + size], "little"), offset + size
    raise ValueError(f"protobuf wire type {kind} is not one an ONNX model uses")


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("a number is cut off")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return value, offset
        shift += 7


def _newest_loadable(graph_at: Callable[[int], bytes], versions: range) -> int:
    newest = versions.start
    for version in versions:
        try:
            ort.InferenceSession(graph_at(version), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime's own error types for a version it does not know
            break
        newest = version
    return newest


def _identity_graph(ir_version: int, opset: int) -> bytes:
    """A serialised ONNX model y = Identity(x) over a float [1], encoded by hand."""
    tensor = _field(1, _field(1, 1) + _field(2, _field(1, _field(1, 1))))  # TypeProto: float, shape [1]
    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")
    graph = _field(1, node) + _field(2, b"g") + _field(11, _field(1, b"x") + _field(2, tensor)) \
        + _field(12, _field(1, b"y") + _field(2, tensor))
    return _field(1, ir_version) + _field(7, graph) + _field(8, _field(1, b"") + _field(2, opset))


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)
