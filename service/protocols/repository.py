"""The Open Inference Protocol's model repository and statistics extensions (Triton's), and traffic between versions.

    POST /v2/repository/index                                  every model version: READY, or UNAVAILABLE and why
    POST /v2/repository/models/{m}/load                        load from the repository, or send the model in the
                                                               request: parameters "config" (JSON) and
                                                               "file:<version>/model.onnx" (base64), as tritonclient's
                                                               load_model(name, config=..., files=...) does
    POST /v2/repository/models/{m}/unload                      stop serving the model's repository versions
    POST /v2/repository/models/{m}/traffic                     {"default", "canary": {"version", "weight"}, "shadow"}
    POST /v2/repository/models/{m}/versions/{v}/promote        make a version the default (the old one is kept for
    POST /v2/repository/models/{m}/rollback                    rollback, which also ends any canary and shadow)
    GET  /v2/models/stats, /v2/models/{m}[/versions/{v}]/stats  Triton's statistics, summed over every worker

Changing what is served is off unless MODEL_SERVER_MODEL_CONTROL=explicit (Triton's model control mode), and then
needs the API key, or comes only from loopback when no key is set. A change is written to the repository's
state.json and applied by this worker before it answers; every other worker follows within WATCH_SECONDS plus the
time to load the model. A new version is loaded and warmed up before it takes any traffic, and a version taken out
of service finishes the requests it has. A change answers once every worker serves it, so its deadline is its own
(control_deadline_s), not MODEL_SERVER_REQUEST_TIMEOUT_S: a load that succeeds slowly is not a 504.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable

from modelcore.card import ModelMetadata
from modelcore.errors import InputError
from service.operations.frontdoor import Call, Route
from service.operations.http import Response, json_response
from service.operations.metrics import count_model_load
from service.operations.settings import Settings
from service.protocols.openapi import Operation
from service.protocols.stats import model_statistics
from service.runtime.intake import IntakeRefused, Submission, files_of_request, take_in
from service.runtime.repository import Repository, catch_up
from service.runtime.state import (
    WATCH_SECONDS,
    ModelState,
    changing_state,
    check_name,
    read_state,
    state_signature,
    wait_for_workers,
)

log = logging.getLogger("bentoml.modelserver")

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def convergence_bound_s(settings: Settings) -> float:
    """How long a change waits for the other workers to serve it before it answers anyway (and logs who lags)."""
    return settings.model_load_timeout_s + 2 * WATCH_SECONDS


def control_deadline_s(settings: Settings) -> float:
    """How long a model-control request may take before it is answered 504: proving a sent model (bounded by
    model_load_timeout_s), then every worker loading it (convergence_bound_s), with request_timeout_s of slack for
    this worker's own load. On a loaded machine the other workers may still be starting, and the request timeout
    alone answered a load that succeeded with 504."""
    return settings.request_timeout_s + settings.model_load_timeout_s + convergence_bound_s(settings)


@dataclass
class ModelControl:
    """What the repository endpoints need: the worker's repository, the folder, the settings, and how to make a
    served model of a name (a built-in class, else the generic one)."""

    repository: Repository
    directory: Path
    settings: Settings
    class_for: Callable[[str], Any]
    built_in_names: frozenset[str]

    # guards ---------------------------------------------------------------------------------------------------

    def allowed(self, call: Call) -> None:
        if self.settings.model_control != "explicit":
            raise InputError("Loading and unloading models is off on this server: start it with "
                             "MODEL_SERVER_MODEL_CONTROL=explicit to manage models through the API.", HTTPStatus.FORBIDDEN)
        client = (call.scope.get("client") or ("",))[0]
        if self.settings.api_key is None and client not in LOOPBACK:
            raise InputError("Model control without an API key answers only on loopback: set MODEL_SERVER_API_KEY to "
                             "manage models from another host.", HTTPStatus.FORBIDDEN)

    # the endpoints --------------------------------------------------------------------------------------------

    async def index(self, call: Call) -> Response:
        """Every model version the server knows: READY, or UNAVAILABLE with the reason."""
        entries = []
        for name in sorted(set(self.repository.names()) | {f.name for f in self.repository.all_failures()}):
            versions = self.repository.versions(name)
            entries += [{"name": name, "version": version, "state": "READY", "reason": ""} for version in versions.loaded]
            entries += [{"name": name, "version": version, "state": "UNAVAILABLE", "reason": failure.reason}
                        for version, failure in versions.failures.items()]
        ready_only = json_object(call, "index request", '{"ready": true} or no body',
                                 {"ready", "repository_name"}).get("ready") is True
        return json_response([entry for entry in entries if entry["state"] == "READY" or not ready_only])

    async def load(self, call: Call) -> Response:
        self.allowed(call)
        name = model_name(call)
        parameters = load_parameters(call)
        config = parse_config(parameters.pop("config", None))
        files = {key: decoded_file(key, value) for key, value in parameters.items() if key.startswith("file:")}
        if files:
            version = await self.take_in(name, files, config)
            await self.change(name, lambda entry: entry.add(version, config.get("default", True) is not False))
        else:
            await self.change(name, lambda entry: reload(entry, name, self.directory, self.built_in_names))
        await self.converged(name)
        return json_response({"name": name, "versions": list(self.repository.versions(name).loaded),
                              "default": self.repository.versions(name).default})

    async def unload(self, call: Call) -> Response:
        self.allowed(call)
        name = model_name(call)
        if name in self.built_in_names and not read_state(self.directory).models.get(name, ModelState()).versions:
            raise InputError(f"{name} is a built-in model of this server: it cannot be unloaded; unload versions loaded "
                             "into the repository, or start the server without it.")
        if self.repository.versions(name) is None and name not in read_state(self.directory).models:
            raise InputError(f"No model {name!r} is loaded.", HTTPStatus.NOT_FOUND)
        await self.change(name, None)
        return json_response({"name": name, "unloaded": True})

    async def traffic(self, call: Call) -> Response:
        self.allowed(call)
        name = model_name(call)
        wanted = parse_traffic(call)
        await self.change(name, lambda entry: entry.set_traffic(wanted, self.served_versions(name)))
        return json_response(self.traffic_of(name))

    async def promote(self, call: Call) -> Response:
        self.allowed(call)
        name, version = model_name(call), call.params["version"]
        await self.change(name, lambda entry: entry.set_traffic({"default": version}, self.served_versions(name)))
        return json_response(self.traffic_of(name))

    async def rollback(self, call: Call) -> Response:
        self.allowed(call)
        name = model_name(call)
        await self.change(name, ModelState.roll_back)
        return json_response(self.traffic_of(name))

    async def stats(self, call: Call) -> Response:
        name, version = call.params.get("model"), call.params.get("version")
        if name is not None and self.repository.versions(name) is None:
            raise InputError(f"Unknown model {name!r}.", HTTPStatus.NOT_FOUND)
        return json_response({"model_stats": model_statistics(self.repository, name, version)})

    # helpers --------------------------------------------------------------------------------------------------

    async def take_in(self, name: str, files: dict[str, bytes], config: dict) -> str:
        base = self.base_metadata(name)
        size = sum(len(content) for content in files.values())
        if size > self.settings.max_model_bytes:
            raise InputError(f"The model's files hold {size:,} bytes; this server takes models up to "
                             f"{self.settings.max_model_bytes:,} bytes (MODEL_SERVER_MAX_MODEL_BYTES).",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            submission = Submission(name=name, files=files_of_request(files), example_shapes=warmup_shapes(config),
                                    labels=config.get("labels") or [], description=str(config.get("description", "")),
                                    source="POST /v2/repository/models/<name>/load", base=base)
            version = await asyncio.to_thread(take_in, self.directory, submission, self.settings.max_model_memory_mb,
                                              self.settings.model_load_timeout_s)
        except IntakeRefused as exc:
            count_model_load(name, "refused")
            raise InputError(exc.message, exc.status) from None
        count_model_load(name, "taken_in")
        return version

    def base_metadata(self, name: str) -> ModelMetadata | None:
        current = self.repository.get_default(name)
        if current is not None:
            return current.metadata
        if name in self.built_in_names:
            raise InputError(f"{name} is a built-in model with no version served here to add one to.", HTTPStatus.CONFLICT)
        return None

    async def change(self, name: str, update: Callable[[ModelState], None] | None) -> None:
        """Change one model's entry in state.json (None: remove it), then apply the state in this worker."""
        def write() -> None:
            with changing_state(self.directory) as state:
                if update is None:
                    state.models.pop(name, None)
                    return
                update(state.models.setdefault(name, ModelState()))

        try:
            await asyncio.to_thread(write)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        await catch_up(self.repository, self.directory, self.settings, self.class_for)
        await self.every_worker_serves_it()

    async def every_worker_serves_it(self) -> None:
        """Answer only once every live worker serves the change (bounded by the model load timeout, then logged)."""
        signature = state_signature(self.directory)
        lagging = await asyncio.to_thread(wait_for_workers, self.directory, signature, convergence_bound_s(self.settings))
        if lagging:
            log.warning("repository change answered before workers %s caught up (they will within the watch period)",
                        ", ".join(lagging))

    async def converged(self, name: str) -> None:
        failure = next((f for f in self.repository.all_failures() if f.name == name), None)
        if failure is not None and name not in self.repository.names():
            raise InputError(f"{name} could not be loaded: {failure.reason}", HTTPStatus.UNPROCESSABLE_ENTITY)

    def served_versions(self, name: str) -> set[str]:
        versions = self.repository.versions(name)
        state = read_state(self.directory).models.get(name, ModelState())
        return (set(versions.loaded) if versions else set()) | set(state.versions)

    def traffic_of(self, name: str) -> dict:
        versions = self.repository.versions(name)
        if versions is None:
            return {"name": name, "default": None, "canary": None, "shadow": None, "versions": []}
        canary = versions.canary
        return {"name": name, "default": versions.default,
                "canary": {"version": canary[0], "weight": canary[1]} if canary else None,
                "shadow": versions.shadow, "versions": list(versions.loaded)}

    def routes(self) -> list[Route]:
        prefix = "/v2/repository/models/{model}"
        guarded = [("/load", self.load), ("/unload", self.unload), ("/traffic", self.traffic),
                   ("/versions/{version}/promote", self.promote), ("/rollback", self.rollback)]
        found = [Route("/v2/repository/index", self.index, ("POST",), "repository")]
        found += [Route(prefix + suffix, handler, ("POST",), "repository",
                        max_body=self.settings.max_model_bytes * 4 // 3 + 65536 if suffix == "/load" else None,
                        timeout_s=control_deadline_s(self.settings))
                  for suffix, handler in guarded]
        found += [Route(path, self.stats, ("GET",), "repository") for path in
                  ("/v2/models/stats", "/v2/models/{model}/stats", "/v2/models/{model}/versions/{version}/stats")]
        return found


def model_name(call: Call) -> str:
    try:
        return check_name(call.params["model"])
    except ValueError as exc:
        raise InputError(str(exc)) from None


def json_object(call: Call, what: str, example: str, fields: set[str]) -> dict:
    """The request's JSON object with only these fields (an empty body is {}); 415 for another content type, 400 for
    anything else."""
    if not call.body.strip():
        return {}
    content_type = (call.header(b"content-type") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise InputError(f"The {what} is sent as application/json, not {content_type}; send {example}.",
                         HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
    try:
        request = json.loads(call.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"The {what} is not JSON ({exc}); send {example}.") from None
    if not isinstance(request, dict) or not set(request) <= fields:
        raise InputError(f"The {what} must be a JSON object with only the field(s) {', '.join(sorted(fields))}; "
                         f"send {example}.")
    return request


def load_parameters(call: Call) -> dict[str, Any]:
    """The load request's parameters ({"parameters": {...}}; an empty body has none)."""
    request = json_object(call, "load request", '{"parameters": {"config": "<JSON>", "file:1/model.onnx": "<base64>"}}, '
                                                "or no body to load from the repository", {"parameters"})
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError("The load request's \"parameters\" must be an object.")
    return parameters


def parse_config(text: Any) -> dict:
    if text is None:
        return {}
    try:
        config = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise InputError(f"parameters.config is not JSON ({exc}); send the model configuration as a JSON string.") from None
    if not isinstance(config, dict):
        raise InputError("parameters.config must be a JSON object.")
    return config


def decoded_file(key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"Parameter {key!r} must be the file's content as a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"Parameter {key!r} is not valid base64.") from None


def warmup_shapes(config: dict) -> dict[str, list[int]]:
    """Input shapes from Triton's model_warmup (the first sample), batch axis first: what proves the model runs."""
    samples = config.get("model_warmup") or []
    if not isinstance(samples, list) or not samples or not isinstance(samples[0], dict):
        return {}
    try:
        batch = int(samples[0].get("batch_size", 0) or 0)
        shapes = {}
        for name, spec in (samples[0].get("inputs") or {}).items():
            dims = [int(dim) for dim in spec.get("dims", [])]
            shapes[name] = ([batch] if batch else []) + dims
    except (AttributeError, TypeError, ValueError):
        raise InputError('config.model_warmup: send [{"batch_size": 1, "inputs": {"<input>": {"dims": [16000]}}}].') from None
    return shapes


def reload(entry: ModelState, name: str, directory: Path, built_in: frozenset[str]) -> None:
    """A load without files: the model's repository versions (the newest one on disk when none is listed)."""
    if entry.versions or name in built_in:
        return
    on_disk = sorted((path for path in (directory / name).glob("*") if (path / "metadata.json").exists()),
                     key=lambda path: path.stat().st_mtime)
    if not on_disk:
        raise ValueError(f"No model {name!r} in the repository: send it in the request (file:1/model.onnx), or put "
                         "it there with `python -m service.store import-onnx`.")
    entry.add(on_disk[-1].name, True)


def parse_traffic(call: Call) -> dict:
    return json_object(call, "traffic request", '{"default": "<version>", "canary": {"version": "<version>", '
                       '"weight": 0.1} or null, "shadow": "<version>" or null}; any of the three',
                       {"default", "canary", "shadow"})


def operations() -> list[Operation]:
    object_ = {"type": "object"}
    tag = "Model repository"
    control = ("400", "401", "403", "404", "409", "413", "415", "422", "503", "504")
    prefix = "/v2/repository/models/{model}"
    return [Operation("post", "/v2/repository/index", "Every model version and its state", {"type": "array"},
                      body_types=("application/json",), errors=("400", "401", "415", "503", "504"), tag=tag),
            Operation("post", prefix + "/load", "Load a model from the repository, or the model sent in the request",
                      object_, body_types=("application/json",), errors=control, tag=tag),
            Operation("post", prefix + "/unload", "Stop serving a model's repository versions", object_,
                      errors=control, tag=tag),
            Operation("post", prefix + "/traffic", "Set the default version, a weighted canary and a shadow", object_,
                      body_types=("application/json",), errors=control, tag=tag),
            Operation("post", prefix + "/versions/{version}/promote", "Make a version the default", object_,
                      errors=control, tag=tag),
            Operation("post", prefix + "/rollback", "Restore the previous default; end the canary and the shadow",
                      object_, errors=control, tag=tag)] + [
        Operation("get", path, "Inference statistics (Triton's statistics extension)", object_,
                  errors=("401", "404", "503", "504"), tag="Open Inference Protocol v2")
        for path in ("/v2/models/stats", "/v2/models/{model}/stats", "/v2/models/{model}/versions/{version}/stats")]
