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
its decoded inputs is its entry's `v2.infer` (service/registry.py). Errors are {"error": ...}: 400 for a
bad request, 404 for an unknown model or version.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field, NonNegativeInt, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelcore.errors import InputError
from service.http import client_error
from service.lifecycle import STATE
from service.registry import TensorSig, V2Signature

EXTENSIONS = ("binary_tensor_data", "model_configuration")
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
    try:
        header = InferRequest.model_validate_json(body[:length])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                             for error in exc.errors()[:5])
        raise InputError(f"The inference request is malformed ({problems}); send "
                         '{"inputs": [{"name", "shape", "datatype", "data"}]}.') from None
    return header, body[length:]


def decode_inputs(header: InferRequest, binary: bytes, signature: V2Signature) -> dict[str, np.ndarray]:
    """Every input tensor of the request as a numpy array, checked against the signature."""
    declared = {tensor.name: tensor for tensor in signature.inputs}
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
    _check_required(arrays, signature)
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


def _check_required(arrays: dict[str, np.ndarray], signature: V2Signature) -> None:
    required = [tensor.name for tensor in signature.inputs if not tensor.optional]
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(f"Missing input(s) {', '.join(missing)}.")
    if not arrays:
        raise InputError(f"Send one of the inputs {', '.join(t.name for t in signature.inputs)}.")


# encoding ----------------------------------------------------------------------------------------


@dataclass
class Requested:
    """Which outputs to answer and which of them as binary data."""

    names: list[str]
    binary: set[str]


def requested_outputs(header: InferRequest, signature: V2Signature) -> Requested:
    declared = [tensor.name for tensor in signature.outputs]
    everything_binary = (header.parameters or {}).get("binary_data_output", False) is True
    if header.outputs is None:
        return Requested(declared, set(declared) if everything_binary else set())
    unknown = [output.name for output in header.outputs if output.name not in declared]
    if unknown:
        raise InputError(f'Unknown output(s) {", ".join(map(repr, unknown))}; this model answers {", ".join(declared)}.')
    binary = {output.name for output in header.outputs
              if (output.parameters or {}).get("binary_data", everything_binary) is True}
    return Requested([output.name for output in header.outputs], binary)


def encode_response(model: Any, header: InferRequest, outputs: dict[str, np.ndarray], requested: Requested,
                    signature: V2Signature) -> Response:
    declared = {tensor.name: tensor for tensor in signature.outputs}
    described, chunks = [], []
    for name in requested.names:
        array = np.asarray(outputs[name])
        tensor = {"name": name, "datatype": declared[name].datatype if array.dtype == object else datatype_of(array.dtype),
                  "shape": list(array.shape)}
        if name in requested.binary:
            raw = _pack_bytes(array) if array.dtype == object else np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = _json_data(array, declared[name])
        described.append(tensor)
    answer = {"model_name": model.name, "model_version": model.version, "outputs": described}
    if header.id is not None:
        answer["id"] = header.id
    text = json.dumps(answer, separators=(",", ":")).encode()
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(text + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(text))})


def _pack_bytes(array: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in (_as_bytes(v) for v in array.ravel()))


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _json_data(array: np.ndarray, sig: TensorSig) -> list:
    if array.dtype == object:
        return [base64.b64encode(_as_bytes(v)).decode() if sig.binary else _as_bytes(v).decode("utf-8", "replace")
                for v in array.ravel()]
    return array.ravel().tolist()


# the routes --------------------------------------------------------------------------------------


def _served(request: Request) -> tuple[Any, V2Signature]:
    """(the model, its v2 signature) the path names; 404 (InputError) for an unknown model or version."""
    server = bentoml.get_current_service()
    name = request.path_params["model"]
    model = server.models.get(name)
    if model is None:
        raise InputError(f"Unknown model {name!r}; served models: {', '.join(server.models)} (GET /v2/models/<name>).",
                         HTTPStatus.NOT_FOUND)
    version = request.path_params.get("version")
    if version is not None and version != model.version:
        raise InputError(f"Model {name} has no version {version!r}; the served version is {model.version}.",
                         HTTPStatus.NOT_FOUND)
    return model, server.v2_signatures[name]


def _answers_v2_errors(handler):
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except InputError as exc:
            # The metric's model label only ever takes served names: a path is anything a client sends.
            name = request.path_params.get("model")
            return client_error(name if name in bentoml.get_current_service().models else "v2", exc.status, exc.message)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


async def server_metadata(_: Request) -> JSONResponse:
    """GET /v2: the server's name, version and the protocol extensions it implements."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("modelserver")
    except PackageNotFoundError:
        ours = "unknown"
    return JSONResponse({"name": "modelserver", "version": ours, "extensions": list(EXTENSIONS)})


async def server_live(_: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def server_ready(_: Request) -> JSONResponse:
    ready = bool(bentoml.get_current_service().models) and not STATE.draining
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@_answers_v2_errors
async def model_metadata(request: Request) -> JSONResponse:
    model, signature = _served(request)
    return JSONResponse({
        "name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
        "inputs": [_describe(tensor) for tensor in signature.inputs],
        "outputs": [_describe(tensor) for tensor in signature.outputs],
    })


def _describe(tensor: TensorSig) -> dict:
    described = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    if len(tensor.datatypes) > 1 or tensor.optional:
        described["parameters"] = {"datatypes": list(tensor.datatypes), "optional": tensor.optional}
    return described


@_answers_v2_errors
async def model_ready(request: Request) -> JSONResponse:
    model, _ = _served(request)
    ready = not STATE.draining
    return JSONResponse({"name": model.name, "ready": ready}, status_code=200 if ready else 503)


@_answers_v2_errors
async def model_config(request: Request) -> JSONResponse:
    """Triton's model configuration: what perf_analyzer and Triton-aware tools read."""
    model, signature = _served(request)
    batched = signature.max_batch_size > 0
    config = {
        "name": model.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "max_batch_size": signature.max_batch_size,
        "input": [_configured(tensor, batched) for tensor in signature.inputs],
        "output": [_configured(tensor, batched) for tensor in signature.outputs],
        "version_policy": {"specific": {"versions": [model.version]}},
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(model.batcher.max_wait_s * 1e6),
                                      "preferred_batch_size": [model.batcher.max_rows]}
    return JSONResponse(config)


def _configured(tensor: TensorSig, batched: bool) -> dict:
    dims = list(tensor.shape[1:] if batched else tensor.shape)
    configured = {"name": tensor.name, "data_type": TRITON_TYPES[tensor.datatype], "dims": dims or [1]}
    if tensor.optional:
        configured["optional"] = True
    return configured


@_answers_v2_errors
async def infer(request: Request) -> Response:
    """POST .../infer: decode the tensors, let the model's entry answer them, encode the outputs asked for."""
    model, signature = _served(request)
    header, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    inputs = decode_inputs(header, binary, signature)
    requested = requested_outputs(header, signature)
    outputs = await signature.infer(model, inputs)
    return encode_response(model, header, outputs, requested, signature)


def routes() -> list[Route]:
    """Every v2 route, with and without a version in the path."""
    per_model = [("", model_metadata, "GET"), ("/ready", model_ready, "GET"), ("/config", model_config, "GET"),
                 ("/infer", infer, "POST")]
    found = [Route("/v2", server_metadata, methods=["GET"]), Route("/v2/health/live", server_live, methods=["GET"]),
             Route("/v2/health/ready", server_ready, methods=["GET"])]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        found += [Route(prefix + suffix, handler, methods=[method]) for suffix, handler, method in per_model]
    return found


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


def operations() -> list:
    """The OpenAPI operations of every v2 route."""
    from service.openapi import Operation

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
