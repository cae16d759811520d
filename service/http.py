"""HTTP plumbing shared by every endpoint: client-error responses, the request-size limit, and 4xx answers for
requests BentoML cannot parse (it would answer 500)."""

from __future__ import annotations

import functools
import io
import logging
from typing import Any, Awaitable, Callable, TypeVar

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelcore.errors import InputError
from service.metrics import count_client_error

log = logging.getLogger("bentoml.modelserver")

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])


def error_response(status: int, message: str) -> JSONResponse:
    """The one error body shape: {"error": "<what went wrong and what to send instead>"}."""
    return JSONResponse({"error": message}, status_code=status)


def answers_client_errors(model: str) -> Callable[[Endpoint], Endpoint]:
    """Turn an InputError raised by an endpoint into its 4xx JSON answer (BentoML would wrap it)."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await endpoint(*args, **kwargs)
            except InputError as exc:
                if "ctx" in kwargs:  # BentoML gives an endpoint with a context the context's status, not the answer's
                    kwargs["ctx"].response.status_code = int(exc.status)
                return client_error(model, exc.status, exc.message)

        return guarded  # type: ignore[return-value]

    return decorate


class BodySizeLimit:
    """ASGI middleware: bodies over `max_bytes` get 413 before any parsing or model work."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await self._reject(scope, receive, send, declared)
        if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # Chunked upload of unknown length: read it (bounded) first, then replay it.
            body, too_large = await _read_bounded(receive, self.max_bytes)
            if too_large:
                return await self._reject(scope, receive, send, None)
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    async def _reject(self, scope: dict, receive: Callable, send: Callable, size: int | None) -> None:
        described = f"{size:,} bytes" if size is not None else "larger than that"
        message = (
            f"Request body is {described}; the limit is {self.max_bytes:,} bytes "
            "(MODEL_SERVER_MAX_REQUEST_BYTES). Send a smaller image or fewer items per request."
        )
        response = error_response(413, message)
        response.headers["connection"] = "close"  # the unread body would otherwise poison the connection
        await response(scope, receive, send)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_bounded(receive: Callable, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive: Callable) -> Callable:
    """A receive() that yields the buffered body once, then waits on the real one (for disconnects)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def refuse_remote_uploads() -> None:
    """Make multipart file fields take uploaded bytes only, never a URL to fetch.

    BentoML's multipart parser downloads any *text* value of a file field as a URL, from the server
    (a request-forgery door, and a 500 when it fails). Here such a value is treated as the file's
    content instead, so it fails image decoding with the usual 415 telling the caller to upload a file.
    """
    from _bentoml_impl import serde

    class UploadOnlyMultipartSerde(serde.MultipartSerde):
        @staticmethod
        async def ensure_file(obj: Any) -> UploadFile:
            if isinstance(obj, UploadFile):
                return obj
            return UploadFile(io.BytesIO(str(obj).encode("utf-8")), filename="field-value.txt")

        async def parse_request(self, request: Any, cls: Any) -> Any:
            # BentoML json-decodes unknown fields and fails with a 500 on binary ones: name them as a 400.
            form = await request.form()
            unknown = [name for name in form if name not in cls.model_fields]
            if unknown:
                raise _form_errors(cls, unknown, form)
            return await super().parse_request(request, cls)

    for media_type, handler in list(serde.ALL_SERDE.items()):
        if handler is serde.MultipartSerde:
            serde.ALL_SERDE[media_type] = UploadOnlyMultipartSerde


def _form_errors(cls: Any, unknown: list[str], form: Any) -> ValidationError:
    """A 400-bound validation error naming unexpected fields and missing required ones."""
    errors = [{"type": "extra_forbidden", "loc": (name,), "input": "..."} for name in unknown]
    errors += [
        {"type": "missing", "loc": (name,), "input": "..."}
        for name, field in cls.model_fields.items()
        if field.is_required() and name not in form
    ]
    return ValidationError.from_exception_data(cls.__name__, errors)


JSON_TYPES = ("application/json",)
MULTIPART_TYPES = ("multipart/form-data",)


def answer_malformed_requests() -> None:
    """Make BentoML's endpoints answer every request they cannot parse with a 4xx {"error"}, never a 500.

    BentoML picks its body parser from the Content-Type alone and lets the parser's own 400s (a multipart
    body without a boundary, a malformed multipart body) escape as 500s. Here each endpoint first checks the
    Content-Type against the one body format it takes (415 naming that format otherwise), and any 4xx the
    parsing raises becomes our error answer, naming the fields to send.
    """
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml.exceptions import BentoMLException

    parse_and_call = ServiceAppFactory.api_endpoint

    async def api_endpoint(self: Any, name: str, request: Request) -> Response:
        spec = self.service.apis[name].input_spec
        model = request.url.path.strip("/").split("/")[0]
        unfit = _unfit_media_type(spec, request.headers.get("content-type"))
        if unfit is not None:
            return client_error(model, *unfit)
        try:
            return await parse_and_call(self, name, request)
        except HTTPException as exc:  # starlette's form parser: 400 "Missing boundary", "Invalid multipart data"
            if exc.status_code >= 500:
                raise
            return client_error(model, exc.status_code, f"{exc.detail.rstrip('.')}: {what_to_send(spec)}.")
        except BentoMLException as exc:  # BentoML's own 4xx answer would be a list, not our {"error"} object
            if exc.error_code >= 500:
                raise
            return client_error(model, int(exc.error_code), f"{exc.message.rstrip('.')}; {what_to_send(spec)}.")

    ServiceAppFactory.api_endpoint = api_endpoint  # type: ignore[method-assign]


def _unfit_media_type(spec: Any, content_type: str | None) -> tuple[int, str] | None:
    """(status, why) when the request's Content-Type does not fit the endpoint, else None."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if spec.mime_type() == "multipart/form-data":
        if media_type not in MULTIPART_TYPES:
            return 415, f"This endpoint got Content-Type {media_type or '(none)'}; {what_to_send(spec)}."
        if "boundary=" not in (content_type or "").lower():
            return 400, f"The multipart Content-Type has no boundary parameter; {what_to_send(spec)}."
        return None
    # No Content-Type is read as JSON (BentoML's default); structured-syntax types like application/ld+json too.
    if not media_type or media_type in JSON_TYPES or media_type.endswith("+json"):
        return None
    return 415, f"This endpoint got Content-Type {media_type}; {what_to_send(spec)}."


def what_to_send(spec: Any) -> str:
    """The body an endpoint takes, in words, from its input model."""
    fields = [f"{name}{'' if field.is_required() else ' (optional)'}" for name, field in spec.model_fields.items()]
    if spec.mime_type() == "multipart/form-data":
        return f"send a multipart/form-data body (e.g. curl -F) with the field(s) {', '.join(fields)}"
    return f"send Content-Type: application/json with a JSON object with the field(s) {', '.join(fields)}"


def client_error(model: str, status: int, message: str) -> JSONResponse:
    """A client mistake's answer, logged and counted. Payloads never reach the log: only the status and our message."""
    log.info("%s: %d %s", model, status, message)
    count_client_error(model, status)
    return error_response(status, message)


class JsonErrorPages:
    """ASGI middleware: the router's own plain-text 404 and 405 pages become our {"error"} JSON answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        replaced = False

        async def send_json_instead(message: dict) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if not content_type.startswith(b"application/json"):
                    replaced = True
                    page = _error_page(message["status"], scope)
                    return await page(scope, receive, send)
            if replaced:  # the swallowed page's body
                return None
            await send(message)

        await self.app(scope, receive, send_json_instead)


def _error_page(status: int, scope: dict) -> JSONResponse:
    path = scope.get("path", "")
    if status == 404:
        return error_response(404, f"No route {path}; the API is described at /docs.json.")
    return error_response(405, f"{scope.get('method')} is not allowed on {path}; see /docs.json for each route's methods.")
