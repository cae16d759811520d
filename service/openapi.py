"""The OpenAPI document at /docs.json: BentoML's own, completed with every answer the server really gives.

BentoML documents its endpoints' 200s and a generic 400/404/500 whose body schema is not the one sent,
and knows nothing of the plain Starlette routes. Here every operation also lists the client errors our
middleware and endpoints answer (401, 413, 415, 422, 503, 504) with the one error body shape, and the plain
routes carry their own operations, so a client generator or a fuzzer sees the server as it is.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

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
    "404": "Unknown model or version",
    "413": "Body or image over the configured size limits",
    "415": "Content-Type or upload format the endpoint does not take",
    "422": "Well-formed input the model cannot use (no digit on the image, an animated image)",
    "500": "A fault of the server or the model (never a client mistake)",
    "503": "At capacity or shutting down: retry after the Retry-After seconds",
    "504": "Not answered within the request timeout",
}
# What any request through the middleware may get, whatever the endpoint.
MIDDLEWARE_ERRORS = ("401", "413", "503", "504")
INFERENCE_ERRORS = ("400", "415", "422", "500", *MIDDLEWARE_ERRORS)
# BentoML's probe and metrics paths: exempt from admission control and the API key by default.
BINARY = {"type": "string", "format": "binary"}
PATH_PARAMETER = re.compile(r"{(\w+)}")
READYZ_NOT_READY = {"description": "Not ready: models still loading, or the worker is draining for shutdown"}


@dataclass
class Operation:
    """One plain route's OpenAPI operation: request body types, answer schema and the errors it may give."""

    method: str
    path: str
    summary: str
    answer: dict[str, Any]
    answer_types: tuple[str, ...] = ("application/json",)
    body_types: tuple[str, ...] = ()
    body_schema: dict[str, Any] | None = None  # for a JSON body; other body types are binary
    errors: tuple[str, ...] = INFERENCE_ERRORS
    schemas: dict[str, Any] = field(default_factory=dict)
    tag: str = "Service APIs"

    def document(self, path_values: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """The operation; `path_values` lists the values a path parameter takes here (the served models)."""
        words = self.path.strip("/").replace("{", "").replace("}", "").replace("/", "_").replace("-", "_")
        operation: dict[str, Any] = {
            "summary": self.summary,
            "tags": [self.tag],
            "operationId": f"modelserver__{self.method}_{words}",
            "responses": {"200": {"description": "Successful Response",
                                  "content": {media: {"schema": self.answer if media.endswith("json") else BINARY}
                                              for media in self.answer_types}},
                          **error_responses(self.errors)},
        }
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string", **({"enum": path_values[name]} if name in (path_values or {}) else {})}}
                      for name in PATH_PARAMETER.findall(self.path)]
        if parameters:
            operation["parameters"] = parameters
        if self.body_types:
            content = {media: {"schema": self.body_schema if media == "application/json" and self.body_schema else BINARY}
                       for media in self.body_types}
            operation["requestBody"] = {"required": True, "content": content}
        return operation


def error_responses(statuses: tuple[str, ...]) -> dict[str, Any]:
    return {status: {"description": CLIENT_ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
            for status in statuses}


def model_schema(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, component schemas it refers to) of a pydantic model, with refs into #/components/schemas."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema, schema.pop("$defs", {})


def merged(into: dict[str, Any], extension: dict[str, Any]) -> dict[str, Any]:
    """`into` with `extension` merged in: dictionaries key by key, lists appended."""
    for key, value in extension.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merged(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value
    return into


def complete(spec: dict[str, Any], operations: list[Operation], path_values: dict[str, list[str]] | None = None,
             extensions: dict[tuple[str, str], dict] | None = None) -> dict[str, Any]:
    """BentoML's spec with our error answers on every operation, the plain routes' operations added, and
    `extensions` ({(method, path): fragment}) merged into the operations BentoML generated."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_BODY
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):  # BentoML's, replaced by Error
        schemas.pop(name, None)
    for path, methods in spec["paths"].items():
        for operation in methods.values():
            if path == "/readyz":
                operation["responses"]["503"] = READYZ_NOT_READY
            elif "requestBody" in operation:
                answers = {str(status): answer for status, answer in operation["responses"].items() if str(status)[0] == "2"}
                operation["responses"] = {**answers, **error_responses(INFERENCE_ERRORS)}
    for operation in operations:
        spec["paths"].setdefault(operation.path, {})[operation.method] = operation.document(path_values)
        schemas.update(operation.schemas)
    for (method, path), fragment in (extensions or {}).items():
        merged(spec["paths"][path][method], copy.deepcopy(fragment))
    return spec


def serve_completed_spec(operations: list[Operation], extensions: dict[tuple[str, str], dict] | None = None) -> None:
    """Make BentoML's /docs.json (and the Swagger UI at / that reads it) serve the completed spec.

    Path parameters naming a model or a version list the ones served, so clients and fuzzers see the real values.
    """
    import bentoml
    from _bentoml_impl.server.app import ServiceAppFactory

    @functools.cache
    def completed(service: Any) -> dict[str, Any]:
        served = bentoml.get_current_service().models
        values = {"model": sorted(served), "version": sorted({model.version for model in served.values()})}
        return complete(service.openapi_spec.asdict(), operations, values, extensions)

    async def openapi_spec_view(self: Any, _: Request) -> JSONResponse:
        return JSONResponse(completed(self.service))

    ServiceAppFactory.openapi_spec_view = openapi_spec_view  # type: ignore[method-assign]
