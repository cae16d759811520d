"""The front door: the one ASGI middleware every request passes first, and the router of the server's own routes.

In one pass, in this order: a request id (the client's X-Request-ID when sane, else a new one; echoed in the
answer, the access log and error logs), the API key, admission control (503 + Retry-After at capacity or while
draining), CORS when configured; then the request goes to one of our routes (every model endpoint, the Open
Inference Protocol, /models, the docs and demo pages), with its body read up to the size limit (413 beyond) and
a deadline (504); or else to BentoML's app (probes, /metrics, static files), whose plain-text 404/405 pages
become our JSON errors. Last, one access-log line and the request metrics.

Our routes skip BentoML's per-request stack (OpenTelemetry span, context middleware, access log, timeout task):
on a one-image request that stack cost more CPU than the model (docs/performance.md). BentoML's app stays in
charge of the process lifecycle, the probes and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from modelcore.errors import InputError
from service.operations.access_log import server_access_log
from service.operations.guards import Admission, ApiKey
from service.operations.http import REQUEST_ID, Response, client_error, error_response
from service.operations.lifecycle import STATE
from service.operations.metrics import count_server_error, in_progress, observe_request
from service.operations.settings import Settings

log = logging.getLogger("bentoml.modelserver")

REQUEST_ID_HEADER = b"x-request-id"
SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")  # anything else could forge log lines: replaced
SERVED_MODEL = "modelserver.model"  # scope key: the served model a handler answered for (the metrics' model label)
OTHER = "other"  # the endpoint label of paths that are not ours (probes, metrics, unknown paths)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(slots=True)
class Call:
    """A request as our route handlers see it: its scope, whole body and path parameters."""

    scope: dict
    body: bytes
    params: dict[str, str]

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    def header(self, name: bytes) -> str | None:
        """The last value of a header (lower-case name), decoded as Latin-1 like the HTTP spec says."""
        found = None
        for key, value in self.scope["headers"]:
            if key == name:
                found = value
        return None if found is None else found.decode("latin-1")

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """One of our routes: a path template ("/v2/models/{model}/infer"), its methods and its handler."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("POST",)
    model: str = "server"  # whose errors these are, in metrics and logs
    max_body: int | None = None  # this route's own body limit (a model upload), else MODEL_SERVER_MAX_REQUEST_BYTES
    timeout_s: float | None = None  # this route's own deadline (model control), else MODEL_SERVER_REQUEST_TIMEOUT_S


@dataclass
class Match:
    route: Route | None
    params: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()  # methods the path takes, when it exists but not with this method

    @property
    def endpoint(self) -> str:
        return self.route.path if self.route else OTHER


class Router:
    """Exact paths by dictionary, templated ones (with {parameters}) by regular expression."""

    def __init__(self, routes: list[Route]) -> None:
        self.exact: dict[str, dict[str, Route]] = {}
        self.templated: list[tuple[re.Pattern, dict[str, Route]]] = []
        patterns: dict[str, dict[str, Route]] = {}
        for route in routes:
            table = patterns.setdefault(route.path, {}) if "{" in route.path else self.exact.setdefault(route.path, {})
            for method in route.methods:
                if method in table:
                    raise ValueError(f"two routes for {method} {route.path}")
                table[method] = route
        self.templated = [(re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", path) + "$"), table)
                          for path, table in patterns.items()]
        self.routes = routes

    def match(self, method: str, path: str) -> Match:
        table = self.exact.get(path)
        params: dict[str, str] = {}
        if table is None:
            for pattern, candidate in self.templated:
                found = pattern.match(path)
                if found:
                    table, params = candidate, found.groupdict()
                    break
            else:
                return Match(None)
        route = table.get(method) or (table.get("GET") if method == "HEAD" else None)
        return Match(route, params) if route else Match(None, allowed=tuple(table))


class FrontDoor:
    """ASGI middleware in front of BentoML's app: see the module docstring for what it does, in order."""

    def __init__(self, app: Any, router: Router, settings: Settings) -> None:
        self.app = app
        self.router = router
        self.api_key = (ApiKey(settings.api_key.get_secret_value(), settings.auth_exempt_paths)
                        if settings.api_key is not None else None)
        self.admission = Admission(settings.max_concurrent_requests, settings.retry_after_s)
        self.max_body = settings.max_request_bytes
        self.timeout = settings.request_timeout_s
        self.access_log = server_access_log() if settings.access_log else None
        self.inner = self.dispatch if not settings.cors_origins else cors(self.dispatch, settings.cors_origins)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        token = REQUEST_ID.set(request_id.decode())
        match = self.router.match(scope["method"], scope["path"])
        scope["modelserver.match"] = match
        outcome = Outcome(request_id)
        gauge = in_progress(match.endpoint)
        gauge.inc()
        admitted = False
        try:
            refusal = self.api_key.refusal(scope) if self.api_key else None
            if refusal is None and Admission.counts(scope["path"]):
                refusal = self.admission.refusal()
                admitted = refusal is None
            if admitted:
                STATE.in_flight += 1  # one event loop per worker: no lock needed
            if refusal is not None:
                await refusal.send(outcome.wrap(send))
            else:
                await self.inner(scope, receive, outcome.wrap(send))
        finally:
            if admitted:
                STATE.in_flight -= 1
            gauge.dec()
            self.finished(scope, match, outcome, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    async def dispatch(self, scope: dict, receive: Callable, send: Callable) -> None:
        match: Match = scope["modelserver.match"]
        if match.route is not None:
            return await self.serve(match, scope, receive, send)
        if match.allowed:
            allowed = ", ".join(match.allowed)
            return await error_response(405, f"{scope['method']} is not allowed on {scope['path']}; it takes {allowed} "
                                             "(see /docs.json).", headers={"allow": allowed}).send(send)
        declared = content_length(scope)
        if declared is not None and declared > self.max_body:
            return await self.too_large(declared, self.max_body).send(send)
        await self.app(scope, receive, json_error_pages(scope, send))

    async def serve(self, match: Match, scope: dict, receive: Callable, send: Callable) -> None:
        """Read the body (bounded), run the handler under the deadline, answer; every failure as JSON."""
        route = match.route
        body = b""
        if scope["method"] in BODY_METHODS:
            limit = route.max_body or self.max_body
            declared = content_length(scope)
            if declared is not None and declared > limit:
                return await self.too_large(declared, limit).send(send)
            body = await read_body(receive, limit)
            if body is None:
                return await self.too_large(None, limit).send(send)
        deadline = route.timeout_s or self.timeout
        try:
            async with asyncio.timeout(deadline):
                response = await route.handler(Call(scope, body, match.params))
        except InputError as exc:
            response = client_error(route.model, int(exc.status), exc.message, exc.detail)
        except TimeoutError:
            response = error_response(504, f"The request was not answered within {deadline:g} seconds; retry "
                                           "later, or send a smaller input.")
        except Exception:  # noqa: BLE001 - a fault of the model or the server: answered, counted, logged, worker kept
            model = scope.get(SERVED_MODEL) or route.model
            log.exception("%s failed on %s %s (request %s)", model, scope["method"], scope["path"], REQUEST_ID.get())
            count_server_error(model)
            response = error_response(500, f"The {model} model failed on this request (request id "
                                           f"{REQUEST_ID.get()}); the server log has the cause. This is not a fault "
                                           "of the request; retrying may not help.")
        await response.send(send)

    @staticmethod
    def too_large(size: int | None, limit: int) -> Response:
        described = f"{size:,} bytes" if size is not None else "larger than that"
        response = error_response(413, f"Request body is {described}; the limit is {limit:,} bytes "
                                       "(MODEL_SERVER_MAX_REQUEST_BYTES, MODEL_SERVER_MAX_MODEL_BYTES for a model upload). "
                                       "Send a smaller image or fewer items per request.")
        response.set_header("connection", "close")  # the unread body would otherwise poison the connection
        return response

    def finished(self, scope: dict, match: Match, outcome: Outcome, seconds: float) -> None:
        # The model a v2 request named, once its handler found it served (a path is anything a client sends).
        model = scope.get(SERVED_MODEL) or (match.route.model if match.route else OTHER)
        observe_request(match.endpoint, model, scope["method"], outcome.status, seconds)
        if self.access_log is not None:
            client = scope.get("client") or ("-", 0)
            self.access_log.write(f'{client[0]}:{client[1]} "{scope["method"]} {scope["path"][:200]}" {outcome.status} '
                                  f'{outcome.sent}B {seconds * 1000:.1f}ms request={outcome.request_id_text}')


def cors(app: Callable, origins: list[str]) -> Callable:
    """Starlette's CORS middleware around our dispatch: preflights answered, allowed origins marked."""
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app, allow_origins=origins, allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "Inference-Header-Content-Length", "X-Request-ID"],
        expose_headers=["X-Model-Name", "X-Model-Version", "X-Noise-Sigma", "X-Noise-Level-In-Range",
                        "X-Denoise-Passes", "Retry-After", "Inference-Header-Content-Length", "X-Request-ID"],
    )


class Outcome:
    """What the answer was (status, body bytes), noted as it is sent; the request id added to its headers."""

    __slots__ = ("request_id", "status", "sent")

    def __init__(self, request_id: bytes) -> None:
        self.request_id = request_id
        self.status = 500  # until an answer starts: a request that never answered is a server error
        self.sent = 0

    @property
    def request_id_text(self) -> str:
        return self.request_id.decode()

    def wrap(self, send: Callable) -> Callable:
        async def noted(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, self.request_id)]
            elif message["type"] == "http.response.body":
                self.sent += len(message.get("body", b""))
            await send(message)

        return noted


def request_id_of(headers: Any) -> bytes:
    """The client's X-Request-ID when it is a sane token, else a new random one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and SANE_REQUEST_ID.match(value):
            return value
    return os.urandom(8).hex().encode()


def content_length(scope: dict) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(receive: Callable, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is over `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_error_pages(scope: dict, send: Callable) -> Callable:
    """A send() that turns a plain-text 404 or 405 page (BentoML's router) into our JSON error."""
    replaced = False

    async def send_json_instead(message: dict) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] in (404, 405):
            content_type = dict(message.get("headers", ())).get(b"content-type", b"")
            if not content_type.startswith(b"application/json"):
                replaced = True
                return await _error_page(message["status"], scope).send(send)
        if replaced:  # the swallowed page's body
            return None
        await send(message)

    return send_json_instead


def _error_page(status: int, scope: dict) -> Response:
    path = scope.get("path", "")
    if status == 404:
        return error_response(404, f"No route {path}; the API is described at /docs.json.")
    return error_response(405, f"{scope.get('method')} is not allowed on {path}; see /docs.json for each route's methods.")
