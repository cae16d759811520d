"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService), served by every worker beside HTTP.

Each worker runs a grpc.aio server on its own event loop, bound to MODEL_SERVER_GRPC_PORT with SO_REUSEPORT (the
kernel spreads connections over the workers, as for HTTP), and answers from the same model versions, batcher and
repository as the HTTP routes. Around every call, the same guards as the HTTP front door, in the same order: a
request id (the client's `x-request-id` metadata when sane, else a new one; sent back as initial metadata), the API
key (`authorization: Bearer <key>` or `x-api-key` metadata), admission control (RESOURCE_EXHAUSTED at capacity,
UNAVAILABLE while draining, both with a `retry-after` trailer), the request deadline (the client's, or the server's
timeout: DEADLINE_EXCEEDED), then one access-log line and the request metrics (endpoint `grpc:<Method>`).

ModelInfer decodes tensors with the HTTP side's own checks (service/protocols/v2.py), so a bad input gets
INVALID_ARGUMENT with the words of the HTTP 400, never INTERNAL; INTERNAL means a fault of the model or the server,
as HTTP 500 does. The metadata, configuration, statistics and repository calls are the HTTP handlers themselves,
given the request as the JSON body they take: one implementation, two transports. The standard gRPC health service
(grpc.health.v1.Health) answers probes: SERVING once the models are loaded, NOT_SERVING from SIGTERM on.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelcore.errors import InputError
from service.operations.access_log import server_access_log
from service.operations.frontdoor import SERVED_MODEL, Call, request_id_of
from service.operations.guards import UNAUTHORISED, Admission, presented_key
from service.operations.http import REQUEST_ID, Response
from service.operations.lifecycle import STATE
from service.operations.metrics import count_rejection, count_server_error, in_progress, observe_request
from service.operations.settings import Settings
from service.protocols.oip import inference_pb2 as pb
from service.protocols.repository import ModelControl, control_deadline_s
from service.protocols.serving import answer_with, choose
from service.protocols.v2 import (DTYPES, V2, decode_inputs, output_datatype, pack_elements, parse_header, raw_bytes,
                                  requested_outputs)
from service.runtime.repository import Repository

log = logging.getLogger("bentoml.modelserver")

SERVICE = "inference.GRPCInferenceService"
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.FAILED_PRECONDITION,
         413: grpc.StatusCode.INVALID_ARGUMENT, 415: grpc.StatusCode.INVALID_ARGUMENT,
         422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED}
# Typed contents: the field each datatype's elements travel in (FP16 and BF16 have none: raw_input_contents only).
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                  "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                  "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents", "BYTES": "bytes_contents"}
UNGUARDED = frozenset({"ServerLive", "ServerReady"})  # probes: no key, never refused (as /livez and /readyz)
CONTROL = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})  # deadline: control_deadline_s, as over HTTP
Handler = Callable[[Any, "Guarded"], Awaitable[Any]]


# ModelInfer: protobuf <-> the HTTP side's decoded tensors ------------------------------------------------------


def infer_header(request: pb.ModelInferRequest) -> tuple[Any, bytes]:
    """The request as the HTTP side's (inference header, binary data): raw contents as they are, typed contents
    packed the same way, so both forms pass the same checks."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: send one per "
                         "input, in the inputs' order (or typed contents for every input).")
    inputs, chunks = [], []
    for index, tensor in enumerate(request.inputs):
        data = raw[index] if raw else typed_bytes(tensor)
        inputs.append({"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype,
                       "parameters": {"binary_data_size": len(data)}})
        chunks.append(data)
    header = {"inputs": inputs, "outputs": [{"name": output.name} for output in request.outputs] or None}
    return parse_header(header), b"".join(chunks)


def typed_bytes(tensor: Any) -> bytes:
    """An input's typed contents in the binary form (little-endian; BYTES elements length-prefixed)."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InputError(f"Input {tensor.name}: {tensor.datatype!r} has no typed contents field; send it in "
                         "raw_input_contents" + ("." if tensor.datatype in DTYPES else f" with a datatype of {', '.join(DTYPES)}."))
    values = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        return pack_elements(values)
    wide = np.asarray(values)
    narrow = wide.astype(DTYPES[tensor.datatype])
    if wide.size and not np.array_equal(narrow, wide):
        raise InputError(f"Input {tensor.name}: values do not fit {tensor.datatype}.")
    return narrow.astype(narrow.dtype.newbyteorder("<")).tobytes()


def infer_response(model: Any, request_id: str, outputs: dict[str, np.ndarray], names: list[str]) -> pb.ModelInferResponse:
    """Every requested output, its elements in raw_output_contents (what Triton's clients read first)."""
    declared = {tensor.name: tensor for tensor in model.outputs}
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request_id)
    for name in names:
        array = np.asarray(outputs[name])
        response.outputs.add(name=name, datatype=output_datatype(array, declared[name]), shape=array.shape)
        response.raw_output_contents.append(raw_bytes(array))
    return response


# one call's guards ---------------------------------------------------------------------------------------------


class Refused(Exception):
    """A call refused before any work (draining, at capacity): the caller should retry after retry_after_s."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Guarded:
    """One call's context: its metadata as (bytes, bytes) headers, the caller, and what the metrics label."""

    __slots__ = ("context", "headers", "scope", "status")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.headers = [(key.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
                        for key, value in (context.invocation_metadata() or ())]
        self.scope: dict = {"type": "grpc", "headers": self.headers, "client": peer_address(context.peer())}
        self.status = 200

    def call(self, path: str, params: dict[str, str], body: dict | None = None) -> Call:
        """The call as an HTTP handler sees it: a JSON body, this caller's headers and address."""
        scope = {**self.scope, "method": "POST" if body is not None else "GET", "path": path,
                 "headers": [*self.headers, (b"content-type", b"application/json")]}
        return Call(scope, json.dumps(body).encode() if body is not None else b"", params)


def peer_address(peer: str) -> tuple[str, int]:
    """grpc's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:...") as an ASGI client (host, port)."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port) if port.isdigit() else 0
    return kind, 0


class Guards:
    """What every call passes before and after its handler (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.expected_key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
        self.admission = Admission(settings.max_concurrent_requests, settings.retry_after_s)
        self.retry_after = str(settings.retry_after_s)
        self.timeout = settings.request_timeout_s
        self.control_timeout = control_deadline_s(settings)
        self.access_log = server_access_log() if settings.access_log else None

    def wrap(self, method: str, handler: Handler, admitted: bool) -> Callable:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.run(method, handler, admitted, request, context)

        guarded.__name__ = method
        return guarded

    async def run(self, method: str, handler: Handler, admitted: bool, request: Any,
                  context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        call = Guarded(context)
        request_id = request_id_of(call.headers)
        token = REQUEST_ID.set(request_id.decode())
        gauge = in_progress(f"grpc:{method}")
        gauge.inc()
        counted = False
        try:
            await context.send_initial_metadata((("x-request-id", request_id.decode()),))
            if method not in UNGUARDED:
                self.check_key(call)
            if admitted:
                self.admit()
                STATE.in_flight += 1  # one event loop per worker, shared with HTTP: no lock needed
                counted = True
            if isinstance(request, Malformed):
                raise InputError(request.why)
            return await self.answer(handler, request, call, self.control_timeout if method in CONTROL else self.timeout)
        except Refused as exc:
            call.status = exc.status
            context.set_trailing_metadata((("retry-after", self.retry_after),))
            await context.abort(CODES[exc.status], exc.message)
        except InputError as exc:
            call.status = int(exc.status)
            await context.abort(CODES.get(call.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
        finally:
            if counted:
                STATE.in_flight -= 1
            gauge.dec()
            self.finished(method, call, time.perf_counter() - started, request_id)
            REQUEST_ID.reset(token)

    def check_key(self, call: Guarded) -> None:
        if self.expected_key is None:
            return
        presented = presented_key(call.headers)
        if presented is None or not hmac.compare_digest(presented, self.expected_key):
            count_rejection("unauthorised")
            raise InputError(UNAUTHORISED.replace("'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                                                  "metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"), 401)

    def admit(self) -> None:
        refusal = self.admission.refusal()
        if refusal is None:
            return
        # Draining: UNAVAILABLE; at capacity: RESOURCE_EXHAUSTED, as gRPC names it; both with HTTP's retry hint.
        raise Refused(503 if STATE.draining else 429, json.loads(refusal.body)["error"])

    async def answer(self, handler: Handler, request: Any, call: Guarded, timeout: float) -> Any:
        remaining = call.context.time_remaining()
        deadline = timeout if remaining is None else min(timeout, remaining)
        try:
            async with asyncio.timeout(deadline):
                return await handler(request, call)
        except TimeoutError:
            raise InputError(f"The request was not answered within {deadline:g} seconds; retry later, or send a smaller "
                             "input.", 504) from None
        except (InputError, asyncio.CancelledError):
            raise
        except Exception:  # noqa: BLE001 - a fault of the model or the server: answered INTERNAL, counted, logged
            model = call.scope.get(SERVED_MODEL) or "grpc"
            log.exception("%s failed on a gRPC call (request %s)", model, REQUEST_ID.get())
            count_server_error(model)
            call.status = 500
            await call.context.abort(grpc.StatusCode.INTERNAL, f"The {model} model failed on this request (request id "
                                     f"{REQUEST_ID.get()}); the server log has the cause. This is not a fault of the "
                                     "request; retrying may not help.")

    def finished(self, method: str, call: Guarded, seconds: float, request_id: bytes) -> None:
        model = call.scope.get(SERVED_MODEL) or "grpc"
        observe_request(f"grpc:{method}", model, "GRPC", call.status, seconds)
        if self.access_log is not None:
            host, port = call.scope["client"]
            self.access_log.write(f'{host}:{port} "GRPC {method}" {call.status} {seconds * 1000:.1f}ms '
                                  f"request={request_id.decode()}")


# the service ---------------------------------------------------------------------------------------------------


def answered(response: Response) -> Any:
    """An HTTP handler's JSON answer; its error as InputError with the same status and words."""
    payload = json.loads(response.body) if response.body else {}
    if response.status >= 400 and isinstance(payload, dict) and "error" in payload:
        raise InputError(payload["error"], response.status)
    return payload


class InferenceService:
    """The RPCs of inference.GRPCInferenceService over one worker's repository (see the module docstring)."""

    def __init__(self, repository: Repository, control: ModelControl) -> None:
        self.repository = repository
        self.v2 = V2(repository)
        self.control = control

    @staticmethod
    def model_params(request: Any) -> dict[str, str]:
        return {"model": request.name, **({"version": request.version} if request.version else {})}

    async def server_live(self, request: Any, call: Guarded) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, call: Guarded) -> Any:
        return pb.ServerReadyResponse(ready=bool(self.repository) and not STATE.draining)

    async def server_metadata(self, request: Any, call: Guarded) -> Any:
        payload = answered(await self.v2.server_metadata(call.call("/v2", {})))
        return json_format.ParseDict(payload, pb.ServerMetadataResponse(), ignore_unknown_fields=True)

    async def model_ready(self, request: Any, call: Guarded) -> Any:
        """Ready or not, never an error (as Triton answers it): an unknown or failed model is simply not ready."""
        model = self.repository.get(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model is not None and not STATE.draining)

    async def model_metadata(self, request: Any, call: Guarded) -> Any:
        payload = answered(await self.v2.model_metadata(call.call("/v2/models/{model}", self.model_params(request))))
        return json_format.ParseDict(payload, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def model_config(self, request: Any, call: Guarded) -> Any:
        payload = answered(await self.v2.model_config(call.call("/v2/models/{model}/config", self.model_params(request))))
        return pb.ModelConfigResponse(config=json_format.ParseDict(payload, pb.ModelConfig(), ignore_unknown_fields=True))

    async def model_infer(self, request: Any, call: Guarded) -> Any:
        model = choose(self.repository, request.model_name, request.model_version or None)
        call.scope[SERVED_MODEL] = model.name
        header, binary = infer_header(request)
        inputs = decode_inputs(header, binary, model.inputs)
        names = requested_outputs(header, model.outputs).names
        outputs = await answer_with(self.repository, model, lambda version: version.infer_tensors(inputs), call.scope)
        return infer_response(model, request.id, outputs, names)

    async def model_statistics(self, request: Any, call: Guarded) -> Any:
        params = self.model_params(request) if request.name else {}  # no name: every model's statistics
        payload = answered(await self.control.stats(call.call("/v2/models/stats", params)))
        return json_format.ParseDict(payload, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def repository_index(self, request: Any, call: Guarded) -> Any:
        body = {"ready": True} if request.ready else {}
        payload = answered(await self.control.index(call.call("/v2/repository/index", {}, body)))
        return json_format.ParseDict({"models": payload}, pb.RepositoryIndexResponse(), ignore_unknown_fields=True)

    async def repository_model_load(self, request: Any, call: Guarded) -> Any:
        parameters = {}
        for key, value in request.parameters.items():
            kind = value.WhichOneof("parameter_choice")
            if key.startswith("file:") and kind == "bytes_param":
                parameters[key] = base64.b64encode(value.bytes_param).decode()
            elif kind is not None:
                parameters[key] = getattr(value, kind)
        path = "/v2/repository/models/{model}/load"
        answered(await self.control.load(call.call(path, {"model": request.model_name}, {"parameters": parameters})))
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, call: Guarded) -> Any:
        path = "/v2/repository/models/{model}/unload"
        answered(await self.control.unload(call.call(path, {"model": request.model_name}, {})))
        return pb.RepositoryModelUnloadResponse()


RPCS = {  # method -> (handler name, request message, admission-counted: model work, as the HTTP inference routes)
    "ServerLive": ("server_live", pb.ServerLiveRequest, False),
    "ServerReady": ("server_ready", pb.ServerReadyRequest, False),
    "ModelReady": ("model_ready", pb.ModelReadyRequest, False),
    "ServerMetadata": ("server_metadata", pb.ServerMetadataRequest, False),
    "ModelMetadata": ("model_metadata", pb.ModelMetadataRequest, False),
    "ModelInfer": ("model_infer", pb.ModelInferRequest, True),
    "ModelConfig": ("model_config", pb.ModelConfigRequest, False),
    "ModelStatistics": ("model_statistics", pb.ModelStatisticsRequest, False),
    "RepositoryIndex": ("repository_index", pb.RepositoryIndexRequest, False),
    "RepositoryModelLoad": ("repository_model_load", pb.RepositoryModelLoadRequest, True),
    "RepositoryModelUnload": ("repository_model_unload", pb.RepositoryModelUnloadRequest, True),
}


class Malformed:
    """A request message that did not parse: answered INVALID_ARGUMENT by the guards (grpc's own answer is INTERNAL)."""

    def __init__(self, message_type: type, error: Exception) -> None:
        self.why = f"The message is not a valid {message_type.__name__} ({error}); send the protocol's message."


def lenient(message_type: type) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and the errors of deeply nested garbage
            return Malformed(message_type, exc)

    return parse


def handlers(service: InferenceService, guards: Guards) -> grpc.GenericRpcHandler:
    """Every RPC of inference.GRPCInferenceService, answered by `service` behind `guards`."""
    methods = {}
    for method, (name, message_type, admitted) in RPCS.items():
        methods[method] = grpc.unary_unary_rpc_method_handler(
            guards.wrap(method, getattr(service, name), admitted), request_deserializer=lenient(message_type),
            response_serializer=lambda message: message.SerializeToString())
    return grpc.method_handlers_generic_handler(SERVICE, methods)


class GrpcServer:
    """This worker's gRPC server: started on its event loop, health NOT_SERVING on drain, stopped at shutdown."""

    def __init__(self, settings: Settings, repository: Repository, control: ModelControl) -> None:
        limit = max(settings.max_request_bytes, settings.max_model_bytes + 65536)
        self.server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1),  # every worker binds the port; the kernel spreads connections
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1),
        ])
        self.server.add_generic_rpc_handlers((handlers(InferenceService(repository, control), Guards(settings)),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.address = f"{settings.host}:{settings.grpc_port}"
        self.bound = self.server.add_insecure_port(self.address)

    async def start(self, ready: bool) -> None:
        if not self.bound:
            log.error("gRPC could not bind %s (in use by another program?); only HTTP serves", self.address)
            return
        await self.server.start()
        await self.set_serving(ready)
        log.info("Open Inference Protocol over gRPC on %s", self.address)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def drain(self) -> None:
        """Probes say NOT_SERVING at once; admission already refuses new calls while in-flight ones finish."""
        await self.set_serving(False)

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)
