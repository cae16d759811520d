"""The OpenAPI document at /docs.json: every route the server answers, with every status it may give.

BentoML contributes its probes and /metrics; every other operation comes from our own declarations: the models'
friendly endpoints (their wire forms and answer schemas, service/models/contract.py), the Open Inference Protocol,
/models, the docs and demo pages. Every operation lists the client errors the front door and the endpoints answer
(400, 401, 413, 415, 422, 503, 504) with the one error body, so a client generator or a fuzzer sees the server as
it is. The title, version and description are the project's own.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.models.contract import Endpoint, JsonBody, Multipart, RawBody, ServedModel

TITLE = "modelserver"
DESCRIPTION = (
    "Neural networks trained in PyTorch, exported to ONNX and served with onnxruntime: handwritten digits (with a "
    "not-a-digit score), text sentiment and image denoising, each behind friendly REST endpoints and the Open "
    "Inference Protocol v2 (KServe v2 / Triton), plus any ONNX model imported with `python -m service.store "
    "import-onnx`. Errors are JSON: `{\"error\": \"<what is wrong and what to send>\"}`, with `detail` naming each "
    "offending field for schema errors. Every answer carries `X-Request-ID` (yours, or a new one) for matching it "
    "with the server's logs."
)
ERROR_BODY = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what is wrong with the request, and what to send instead"},
        "detail": {"type": "array", "items": {"type": "object"},
                   "description": "request-schema validation errors: each names the offending field (loc)"},
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
CLIENT_ERRORS = {
    "400": "Malformed request: missing or unexpected field, invalid JSON or multipart body, wrong shape or range",
    "401": "An API key is configured and the request has none or a wrong one",
    "403": "Model control is off (MODEL_SERVER_MODEL_CONTROL), or on without an API key for a caller not on loopback",
    "404": "Unknown model or version",
    "405": "The path does not take this method",
    "409": "The change conflicts with what is served (a built-in model's only version, a version still taking traffic)",
    "413": "Body or image over the configured size limits",
    "415": "Content-Type or upload format the endpoint does not take",
    "422": "Well-formed input the model cannot use (no digit on the image, an animated image)",
    "500": "A fault of the server or the model (never a client mistake); the answer names the model",
    "503": "At capacity, shutting down, or the model is not ready: retry after the Retry-After seconds",
    "504": "Not answered within the request timeout",
}
TAGS = [
    {"name": "Models", "description": "Each model's friendly endpoints, and the list of served models"},
    {"name": "Open Inference Protocol v2", "description": "KServe v2 / Triton HTTP: every model, JSON or binary tensors"},
    {"name": "Infrastructure", "description": "Probes for orchestrators, and Prometheus metrics"},
    {"name": "Documentation", "description": "This page and the OpenAPI document"},
    {"name": "Demo", "description": "A web page to try every model in a browser"},
]
# What any request through the front door may get, whatever the endpoint.
MIDDLEWARE_ERRORS = ("401", "413", "503", "504")
INFERENCE_ERRORS = ("400", "415", "422", "500", *MIDDLEWARE_ERRORS)
BINARY = {"type": "string", "format": "binary"}
PATH_PARAMETER = re.compile(r"{(\w+)}")
READYZ_NOT_READY = {"description": "Not ready: models still loading, or the worker is draining for shutdown"}


@dataclass
class Operation:
    """One route's OpenAPI operation: request body types, answer schema and the errors it may give."""

    method: str
    path: str
    summary: str
    answer: dict[str, Any]
    answer_types: tuple[str, ...] = ("application/json",)
    body_types: tuple[str, ...] = ()
    body_schema: dict[str, Any] | None = None  # for a JSON or multipart body; other body types are binary
    errors: tuple[str, ...] = INFERENCE_ERRORS
    schemas: dict[str, Any] = field(default_factory=dict)
    tag: str = "Models"
    parameters: list[dict[str, Any]] = field(default_factory=list)  # query parameters

    def document(self, path_values: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """The operation; `path_values` lists the values a path parameter takes here (the served models)."""
        words = self.path.strip("/").replace("{", "").replace("}", "").replace("/", "_").replace("-", "_")
        operation: dict[str, Any] = {
            "summary": self.summary,
            "tags": [self.tag],
            "operationId": f"modelserver__{self.method}_{words or 'index'}",
            "responses": {"200": {"description": "Successful Response",
                                  "content": {media: {"schema": self.answer if media.endswith("json") else BINARY}
                                              for media in self.answer_types}},
                          **error_responses(self.errors)},
        }
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string", **({"enum": path_values[name]} if name in (path_values or {}) else {})}}
                      for name in PATH_PARAMETER.findall(self.path)] + self.parameters
        if parameters:
            operation["parameters"] = parameters
        if self.body_types:
            structured = ("application/json", "multipart/form-data")
            content = {media: {"schema": self.body_schema if media in structured and self.body_schema else BINARY}
                       for media in self.body_types}
            operation["requestBody"] = {"required": True, "content": content}
        return operation


def error_responses(statuses: tuple[str, ...]) -> dict[str, Any]:
    return {status: {"description": CLIENT_ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
            for status in statuses}


def model_schema(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, component schemas it refers to) of a pydantic model, with refs into #/components/schemas."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema, schema.pop("$defs", {})


def endpoint_operation(model_class: type[ServedModel], endpoint: Endpoint) -> Operation:
    """The operation of a model's friendly endpoint, from its declaration."""
    answer, schemas = model_schema(endpoint.answer) if endpoint.answer else ({}, {})
    body_types, body_schema = request_body(endpoint)
    if body_schema:
        schemas = {**schemas, **body_schema.pop("$defs", {})}
    doc = getattr(model_class, endpoint.method).__doc__ or ""
    summary = endpoint.summary or " ".join(doc.split("\n\n")[0].split())
    parameters = [{"name": query.name, "in": "query", "required": False, "description": query.description,
                   "schema": {"type": "string", "enum": list(query.values)}} for query in endpoint.query]
    return Operation("post", endpoint.path, summary, answer, answer_types=endpoint.answer_types, body_types=body_types,
                     body_schema=body_schema, schemas=schemas, parameters=parameters)


def request_body(endpoint: Endpoint) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """(the media types the body may have, its schema for the structured ones)."""
    body = endpoint.body
    if isinstance(body, JsonBody):
        return ("application/json",), body.schema.model_json_schema(ref_template="#/components/schemas/{model}")
    if isinstance(body, Multipart):
        properties = {name: {**BINARY, "title": name.title()} for name in body.files}
        if body.fields:
            properties.update({name: without_null(schema) for name, schema in
                               body.fields.model_json_schema()["properties"].items()})
        return ("multipart/form-data",), {"type": "object", "title": "Input", "required": list(body.files),
                                          "properties": properties}
    assert isinstance(body, RawBody)
    return body.media_types, None


def without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional form field's schema as its one real type: a form field is absent, never null."""
    variants = [variant for variant in schema.get("anyOf", ()) if variant.get("type") != "null"]
    if len(variants) != 1:
        return schema
    collapsed = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**collapsed, **variants[0]}


def complete(spec: dict[str, Any], operations: list[Operation], version: str,
             path_values: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """BentoML's spec (its probes and /metrics) with our own info, error schema and every operation of ours."""
    spec = copy.deepcopy(spec)
    spec["info"] = {"title": TITLE, "version": version, "description": DESCRIPTION}
    spec["tags"] = TAGS
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_BODY
    for name in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):  # BentoML's, unused
        schemas.pop(name, None)
    for path, methods in spec["paths"].items():
        for operation in methods.values():
            if path == "/readyz":
                operation["responses"]["503"] = READYZ_NOT_READY
    for operation in operations:
        spec["paths"].setdefault(operation.path, {})[operation.method] = operation.document(path_values)
        schemas.update(operation.schemas)
    return spec
