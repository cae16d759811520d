"""The Open Inference Protocol v2 over REST (KServe v2 / Triton HTTP), generic over the served models.

    GET  /v2                                   server metadata and the extensions implemented
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]         model metadata: inputs and outputs (name, datatype, shape)
    GET  /v2/models/{m}[/versions/{v}]/ready
    GET  /v2/models/{m}[/versions/{v}]/config  Triton's model configuration extension
    POST /v2/models/{m}[/versions/{v}]/infer   JSON tensors, or the binary tensor data extension

Tensors arrive as JSON (`data`, nested or flat) or as binary data after a JSON header of
`Inference-Header-Content-Length` bytes (`parameters.binary_data_size` per input); outputs are answered
the same ways (`binary_data` per requested output, or `binary_data_output` for all). BYTES elements are
4-byte little-endian lengths followed by the bytes in binary form; in JSON form they are strings, base64
for tensors that carry binary content (encoded images). Protocol handling is here; what a model does with
its decoded inputs is the model contract's decode -> predict -> encode (service/models/contract.py). Errors are
{"error": ...}: 400 for a bad request, 404 for an unknown model or version, 503 for a model that is not ready.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Iterable

import numpy as np
from pydantic import BaseModel, Field, NonNegativeInt, ValidationError

from modelcore.errors import InputError
from service.models.contract import ServedModel, TensorSig
from service.operations.frontdoor import SERVED_MODEL, Call, Route
from service.operations.http import Response, client_error, json_bytes, json_response
from service.operations.lifecycle import STATE
from service.protocols.openapi import Operation
from service.protocols.serving import answer_with, choose
from service.runtime.repository import Repository

EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
HEADER_LENGTH = "inference-header-content-length"
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
TRITON_TYPES = {name: f"TYPE_{'STRING' if name == 'BYTES' else name}" for name in DTYPES}
MAX_ELEMENTS = 1 << 26  # a JSON or binary tensor larger than this is refused before allocating it


def datatype_of(dtype: np.dtype) -> str:
    """The v2 datatype of a numpy dtype."""
    for name, numpy_type in DTYPES.items():
        if np.dtype(numpy_type) == dtype:
            return name
    raise ValueError(f"no v2 datatype for {dtype}")


# decoding ----------------------------------------------------------------------------------------


class InputTensor(BaseModel):
    name: str
    shape: list[NonNegativeInt]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """The JSON part of an inference request (the binary tensor data follows it)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def split_body(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """(the JSON inference header, the binary data after it)."""
    try:
        length = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise InputError(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InputError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    return parse_header(body[:length]), body[length:]


def parse_header(header: bytes | dict) -> InferRequest:
    """The inference header (JSON text, or the same as a dict), checked; InputError naming what is wrong."""
    try:
        if isinstance(header, dict):
            return InferRequest.model_validate(header)
        return InferRequest.model_validate_json(header)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                             for error in exc.errors()[:5])
        raise InputError(f"The inference request is malformed ({problems}); send "
                         '{"inputs": [{"name", "shape", "datatype", "data"}]}.') from None


def decode_inputs(header: InferRequest, binary: bytes, inputs: tuple[TensorSig, ...]) -> dict[str, np.ndarray]:
    """Every input tensor of the request as a numpy array, checked against the model's declared inputs."""
    declared = {tensor.name: tensor for tensor in inputs}
    arrays, offset = {}, 0
    for tensor in header.inputs:
        if tensor.name not in declared:
            raise InputError(f"Unknown input {tensor.name!r}; this model takes {', '.join(declared)}.")
        if tensor.name in arrays:
            raise InputError(f"Input {tensor.name!r} is given twice.")
        sig = declared[tensor.name]
        shape, datatype = _shape_and_type(tensor, sig)
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InputError(f"Input {sig.name}: binary_data_size {size!r} runs past the {len(binary)} binary bytes sent.")
            array = _from_binary(binary[offset : offset + size], shape, datatype, sig)
            offset += size
        else:
            array = _from_json(tensor.data, shape, datatype, sig)
        arrays[sig.name] = array
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} binary bytes after the inputs were not claimed by any binary_data_size.")
    _check_required(arrays, inputs)
    return arrays


def _shape_and_type(tensor: InputTensor, sig: TensorSig) -> tuple[tuple[int, ...], str]:
    shape, datatype = tensor.shape, tensor.datatype
    if datatype not in sig.datatypes:
        raise InputError(f"Input {sig.name} has datatype {datatype!r}; send {' or '.join(sig.datatypes)}.")
    if len(shape) != len(sig.shape) or any(want not in (-1, got) for want, got in zip(sig.shape, shape)):
        raise InputError(f"Input {sig.name} has shape {shape!r}; send shape {list(sig.shape)} (-1: any size).")
    if int(np.prod(shape)) > MAX_ELEMENTS:
        raise InputError(f"Input {sig.name} has {int(np.prod(shape)):,} elements; the limit is {MAX_ELEMENTS:,}.",
                         HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return tuple(shape), datatype


def _from_binary(data: bytes, shape: tuple[int, ...], datatype: str, sig: TensorSig) -> np.ndarray:
    count = int(np.prod(shape))
    if datatype == "BYTES":
        elements = _unpack_bytes(data, sig.name)
        if len(elements) != count:
            raise InputError(f"Input {sig.name}: {len(elements)} BYTES elements for shape {list(shape)}.")
        return _object_array(elements, shape)
    dtype = np.dtype(DTYPES[datatype])
    if len(data) != count * dtype.itemsize:
        raise InputError(f"Input {sig.name}: {len(data)} bytes of {datatype} for shape {list(shape)} "
                         f"(expected {count * dtype.itemsize}).")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)


def _object_array(elements: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array.reshape(shape)


def _unpack_bytes(data: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InputError(f"Input {name}: a BYTES element's 4-byte length is cut off.")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InputError(f"Input {name}: a BYTES element of {length} bytes runs past the data sent.")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def _from_json(data: Any, shape: tuple[int, ...], datatype: str, sig: TensorSig) -> np.ndarray:
    if data is None:
        raise InputError(f"Input {sig.name} has neither \"data\" nor parameters.binary_data_size.")
    flat = _flatten(data)
    if len(flat) != int(np.prod(shape)):
        raise InputError(f"Input {sig.name}: {len(flat)} values for shape {list(shape)}.")
    if datatype == "BYTES":
        if not all(isinstance(value, str) for value in flat):
            raise InputError(f"Input {sig.name}: BYTES data must be strings.")
        elements = [_base64(value, sig.name) if sig.binary else value.encode("utf-8") for value in flat]
        return _object_array(elements, shape)
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) or
               (datatype == "BOOL" and isinstance(value, bool)) for value in flat):
        raise InputError(f"Input {sig.name}: {datatype} data must be numbers.")
    try:
        return np.array(flat, dtype=DTYPES[datatype]).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise InputError(f"Input {sig.name}: values do not fit {datatype} ({exc}).") from None


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    flat = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested list cannot exhaust the interpreter's stack
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _base64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InputError(f"Input {name}: in JSON form its BYTES elements are base64 strings of the file's bytes "
                         "(or send it as binary data).") from None


def _check_required(arrays: dict[str, np.ndarray], inputs: tuple[TensorSig, ...]) -> None:
    required = [tensor.name for tensor in inputs if not tensor.optional]
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(f"Missing input(s) {', '.join(missing)}.")
    if not arrays:
        raise InputError(f"Send one of the inputs {', '.join(t.name for t in inputs)}.")


# encoding ----------------------------------------------------------------------------------------


@dataclass
class Requested:
    """Which outputs to answer and which of them as binary data."""

    names: list[str]
    binary: set[str]


def requested_outputs(header: InferRequest, outputs: tuple[TensorSig, ...]) -> Requested:
    declared = [tensor.name for tensor in outputs]
    everything_binary = (header.parameters or {}).get("binary_data_output", False) is True
    if header.outputs is None:
        return Requested(declared, set(declared) if everything_binary else set())
    unknown = [output.name for output in header.outputs if output.name not in declared]
    if unknown:
        raise InputError(f'Unknown output(s) {", ".join(map(repr, unknown))}; this model answers {", ".join(declared)}.')
    binary = {output.name for output in header.outputs
              if (output.parameters or {}).get("binary_data", everything_binary) is True}
    return Requested([output.name for output in header.outputs], binary)


def encode_response(model: ServedModel, header: InferRequest, outputs: dict[str, np.ndarray],
                    requested: Requested) -> Response:
    declared = {tensor.name: tensor for tensor in model.outputs}
    described, chunks = [], []
    for name in requested.names:
        array = np.asarray(outputs[name])
        tensor = {"name": name, "datatype": output_datatype(array, declared[name]), "shape": list(array.shape)}
        if name in requested.binary:
            raw = raw_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = _json_data(array, declared[name])
        described.append(tensor)
    answer = {"model_name": model.name, "model_version": model.version, "outputs": described}
    if header.id is not None:
        answer["id"] = header.id
    text = json_bytes(answer)
    if not chunks:
        return Response(text)
    return Response(text + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(text))})


def output_datatype(array: np.ndarray, sig: TensorSig) -> str:
    return sig.datatype if array.dtype == object else datatype_of(array.dtype)


def raw_bytes(array: np.ndarray) -> bytes:
    """A tensor's elements in the binary form: little-endian, row-major; BYTES elements length-prefixed."""
    if array.dtype == object:
        return _pack_bytes(array)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def _pack_bytes(array: np.ndarray) -> bytes:
    return pack_elements(_as_bytes(v) for v in array.ravel())


def pack_elements(values: Iterable[bytes]) -> bytes:
    """BYTES elements in the binary form: each one prefixed with its length (4 bytes, little-endian)."""
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _json_data(array: np.ndarray, sig: TensorSig) -> list:
    if array.dtype == object:
        return [base64.b64encode(_as_bytes(v)).decode() if sig.binary else _as_bytes(v).decode("utf-8", "replace")
                for v in array.ravel()]
    return array.ravel().tolist()


# the routes --------------------------------------------------------------------------------------


class V2:
    """The protocol's handlers over one worker's repository of served models."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def served(self, call: Call) -> ServedModel:
        """The model version the path names (or the one that takes its traffic); 404 for an unknown model or
        version, 503 for one that failed to load."""
        model = choose(self.repository, call.params["model"], call.params.get("version"))
        call.scope[SERVED_MODEL] = model.name
        return model

    def answers_errors(self, handler):
        """Client mistakes as {"error"}; the metric's model label only ever takes served names."""
        async def guarded(call: Call) -> Response:
            try:
                return await handler(call)
            except InputError as exc:
                name = call.params.get("model")
                label = name if name in self.repository.names() else "v2"
                return client_error(label, int(exc.status), exc.message, exc.detail)

        guarded.__name__ = handler.__name__
        return guarded

    async def server_metadata(self, _: Call) -> Response:
        """GET /v2: the server's name, version and the protocol extensions it implements."""
        return json_response({"name": "modelserver", "version": package_version(), "extensions": list(EXTENSIONS)})

    async def server_live(self, _: Call) -> Response:
        return json_response({"live": True})

    async def server_ready(self, _: Call) -> Response:
        ready = bool(self.repository) and not STATE.draining
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def model_metadata(self, call: Call) -> Response:
        model = self.served(call)
        versions = self.repository.versions(model.name)
        return json_response({
            "name": model.name, "versions": list(versions.loaded) if versions else [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": [_describe(tensor) for tensor in model.inputs],
            "outputs": [_describe(tensor) for tensor in model.outputs],
        })

    async def model_ready(self, call: Call) -> Response:
        model = self.served(call)
        ready = not STATE.draining
        return json_response({"name": model.name, "ready": ready}, status=200 if ready else 503)

    async def model_config(self, call: Call) -> Response:
        """Triton's model configuration: what perf_analyzer and Triton-aware tools read."""
        model = self.served(call)
        batched = model.max_batch_size > 0
        config = {
            "name": model.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
            "max_batch_size": model.max_batch_size,
            "input": [_configured(tensor, batched) for tensor in model.inputs],
            "output": [_configured(tensor, batched) for tensor in model.outputs],
            "version_policy": {"specific": {"versions": [model.version]}},
        }
        if batched:
            batcher = model.session.batcher
            config["dynamic_batching"] = {"max_queue_delay_microseconds": int(batcher.max_wait_s * 1e6),
                                          "preferred_batch_size": [batcher.max_rows]}
        return json_response(config)

    async def infer(self, call: Call) -> Response:
        """POST .../infer: decode the tensors, let the model answer them, encode the outputs asked for."""
        model = self.served(call)
        header, binary = split_body(call.body, call.header(b"inference-header-content-length"))
        inputs = decode_inputs(header, binary, model.inputs)
        requested = requested_outputs(header, model.outputs)
        outputs = await answer_with(self.repository, model, lambda version: version.infer_tensors(inputs), call.scope)
        return encode_response(model, header, outputs, requested)

    def routes(self) -> list[Route]:
        """Every v2 route, with and without a version in the path."""
        per_model = [("", self.model_metadata, "GET"), ("/ready", self.model_ready, "GET"),
                     ("/config", self.model_config, "GET"), ("/infer", self.infer, "POST")]
        found = [Route("/v2", self.server_metadata, ("GET",), "v2"),
                 Route("/v2/health/live", self.server_live, ("GET",), "v2"),
                 Route("/v2/health/ready", self.server_ready, ("GET",), "v2")]
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            found += [Route(prefix + suffix, self.answers_errors(handler), (method,), "v2")
                      for suffix, handler, method in per_model]
        return found


def package_version() -> str:
    """This server's version: the installed package's, from pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelserver")
    except PackageNotFoundError:
        return "unknown"


def _describe(tensor: TensorSig) -> dict:
    described = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    if len(tensor.datatypes) > 1 or tensor.optional:
        described["parameters"] = {"datatypes": list(tensor.datatypes), "optional": tensor.optional}
    return described


def _configured(tensor: TensorSig, batched: bool) -> dict:
    dims = list(tensor.shape[1:] if batched else tensor.shape)
    configured = {"name": tensor.name, "data_type": TRITON_TYPES[tensor.datatype], "dims": dims or [1]}
    if tensor.optional:
        configured["optional"] = True
    return configured


# OpenAPI ------------------------------------------------------------------------------------------

TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": list(DTYPES)}, "data": {"description": "row-major values, nested or flat"},
    "parameters": {"type": "object"}}}
INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object"}, "inputs": {"type": "array", "items": TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}}}}
INFER_RESPONSE = {"type": "object", "required": ["model_name", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "outputs": {"type": "array", "items": TENSOR}}}
OBJECT = {"type": "object"}
PROTOCOL = "Open Inference Protocol v2"


def operations() -> list[Operation]:
    """The OpenAPI operations of every v2 route."""
    found = [Operation("get", "/v2", "Server metadata and protocol extensions", OBJECT, errors=("401", "503", "504"),
                       tag=PROTOCOL),
             Operation("get", "/v2/health/live", "Server liveness", OBJECT, errors=(), tag=PROTOCOL),
             Operation("get", "/v2/health/ready", "Server readiness (503 while loading or draining)", OBJECT,
                       errors=("503",), tag=PROTOCOL)]
    lookups = ("401", "404", "503", "504")
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        found += [
            Operation("get", prefix, "Model metadata: inputs and outputs", OBJECT, errors=lookups, tag=PROTOCOL),
            Operation("get", prefix + "/ready", "Model readiness", OBJECT, errors=lookups, tag=PROTOCOL),
            Operation("get", prefix + "/config", "Triton model configuration", OBJECT, errors=lookups, tag=PROTOCOL),
            Operation("post", prefix + "/infer", "Inference: JSON tensors, or a JSON header and binary tensor data",
                      INFER_RESPONSE, answer_types=("application/json", "application/octet-stream"),
                      body_types=("application/json", "application/octet-stream"), body_schema=INFER_REQUEST,
                      errors=("400", "404", "413", "415", "422", "500", "401", "503", "504"), tag=PROTOCOL),
        ]
    return found
