"""The model server: every built-in and imported model behind its friendly endpoints and the Open Inference
Protocol, on one BentoML service.

    bentoml serve service.app:ModelServer      (make serve does this, after importing the models)

This module only wires the layers together (service/__init__.py draws them): the models from the registry and
the store, one repository of served models per worker, the routes every protocol derives from the model contract,
and the front door in front of BentoML's app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

import bentoml

from service.models.imported import ImportedModel
from service.models.registry import built_in_models
from service.operations import bentoml_internals
from service.operations.frontdoor import Call, FrontDoor, Route, Router
from service.operations.http import Response, json_response
from service.operations.lifecycle import ON_DRAIN, ON_DRAINED, STATE, drain_on_sigterm
from service.operations.settings import get_settings
from service.protocols import demo, diagnostics, docs, grpc_v2, repository, rest, v2
from service.protocols.openapi import Operation, complete, endpoint_operation
from service.runtime.repository import Repository, follow, load_state, stored_directory, verify_store
from service.runtime.state import repository_dir

settings = get_settings()
MODELS = built_in_models()
# What the model store must hold: the built-in models at their pinned tags. Models loaded at run time live in the
# model repository (MODEL_SERVER_REPOSITORY) and its state.json.
DECLARED = {model.name: bentoml.models.BentoModel(settings.model_tag(model.name)) for model in MODELS}
MODEL_CLASSES = {model.name: model for model in MODELS}
REPOSITORY = Repository()  # this worker's served models, loaded in ModelServer.__init__
REPOSITORY_DIR = repository_dir(settings.repository)


def class_for(name: str) -> type:
    """The class that serves a model name: its built-in class, else the generic one for imported graphs."""
    return MODEL_CLASSES.get(name, ImportedModel)

# Class attributes, so `bentoml build` packs every declared model into the Bento.
DeclaredModels = type("DeclaredModels", (), {f"model_{index}": reference
                                             for index, reference in enumerate(DECLARED.values())})


@bentoml.service(
    name="modelserver",
    workers=settings.worker_count,
    http={"host": settings.host, "port": settings.port, "cors": {"enabled": False}},  # CORS: the front door's
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": False}},  # the front door writes one access line per request, with its id
)
class ModelServer(DeclaredModels):
    """Loads every declared model in each worker; /livez, /readyz and /metrics come from BentoML."""

    def __init__(self) -> None:
        for name, reference in DECLARED.items():
            REPOSITORY.load(class_for(name), stored_directory(reference), str(reference.stored.tag), settings)
        load_state(REPOSITORY, REPOSITORY_DIR, settings, class_for)
        with contextlib.suppress(RuntimeError):  # no event loop: the class used in-process, not by a server
            self.follower = asyncio.get_running_loop().create_task(follow(REPOSITORY, REPOSITORY_DIR, settings, class_for))
        if settings.grpc_port:
            self.serve_grpc()
        drain_on_sigterm(grace_s=settings.request_timeout_s)
        # Everything loaded so far lives as long as the worker: keep the garbage collector from re-scanning
        # it on every full collection (those scans were the p99 latency spikes, docs/performance.md).
        gc.freeze()

    def serve_grpc(self) -> None:
        """The Open Inference Protocol over gRPC on this worker's event loop, beside HTTP (service/protocols/grpc_v2.py)."""
        with contextlib.suppress(RuntimeError):  # no event loop: the class used in-process, not by a server
            loop = asyncio.get_running_loop()
            self.grpc = grpc_v2.GrpcServer(settings, REPOSITORY, model_control())
            self.grpc_started = loop.create_task(self.grpc.start(ready=bool(REPOSITORY)))
            ON_DRAIN.append(self.grpc.drain)
            ON_DRAINED.append(lambda: self.grpc.stop(grace_s=1.0))

    async def __is_ready__(self) -> bool:
        # Every model was loaded (or isolated as failed) in __init__; not ready once draining for shutdown.
        return bool(REPOSITORY) and not STATE.draining

    @bentoml.on_shutdown
    def close_models(self) -> None:
        REPOSITORY.close()


async def list_models(_: Call) -> Response:
    """GET /models: every served model (its default version's version, input spec, metrics and provider, and every
    version with how traffic is split), and every version that failed to load with why."""
    served = []
    for model in REPOSITORY:
        versions = REPOSITORY.versions(model.name)
        canary = versions.canary
        served.append({**model.info(), "ready": True, "versions": list(versions.loaded),
                       "canary": {"version": canary[0], "weight": canary[1]} if canary else None,
                       "shadow": versions.shadow})
    failed = [{"name": failure.name, "tag": failure.tag, "ready": False, "error": failure.reason}
              for failure in REPOSITORY.all_failures()]
    return json_response({"models": served + failed})


MODELS_ANSWER = {"type": "object", "required": ["models"],
                 "properties": {"models": {"type": "array", "items": {"type": "object"}}}}


def openapi_document() -> dict:
    """BentoML's spec of its probes, completed with every operation of ours (computed once per worker)."""
    operations = [Operation("get", "/models", "Every served model: version, inputs, outputs, metrics, provider",
                            answer=MODELS_ANSWER, errors=("401", "503", "504")),
                  *(endpoint_operation(model, endpoint) for model in MODELS for endpoint in model.endpoints),
                  *v2.operations(), *repository.operations(), *docs.operations(), *demo.operations()]
    served = list(REPOSITORY)
    values = {"model": sorted(model.name for model in served), "version": sorted({model.version for model in served})}
    return complete(ModelServer.openapi_spec.asdict(), operations, v2.package_version(), values)


def models_settings() -> dict:
    """Every built-in model's own settings (size and length limits the demo page checks before sending)."""
    found: dict = {}
    for model in MODELS:
        if model.settings_class is not None:
            found |= model.settings_class().model_dump()
    return found


def model_control() -> repository.ModelControl:
    return repository.ModelControl(REPOSITORY, REPOSITORY_DIR, settings, class_for, frozenset(MODEL_CLASSES))


def routes() -> list[Route]:
    found = [Route("/models", list_models, ("GET",)),
             *(route for model in MODELS for route in rest.routes(model, REPOSITORY)),
             *v2.V2(REPOSITORY).routes(), *model_control().routes(), *docs.routes(openapi_document),
             *demo.routes(settings, models_settings())]
    return found + (diagnostics.routes() if settings.diagnostics else [])


ROUTER = Router(routes())
bentoml_internals.apply(lambda app: FrontDoor(app, ROUTER, settings))
# Refuse to start (one clear line, non-zero exit) rather than crash-loop workers on a missing or corrupt model.
verify_store(list(DECLARED.values()))
