"""The model server: every registered model's endpoints, the Open Inference Protocol v2, on one BentoML service.

    bentoml serve service.app:ModelServer      (make serve does this, after importing the models)

The models come from the registry (service/registry.py): each entry's API mixin, plain routes, OpenAPI
operations and v2 signature; models users imported with `python -m service.store import-onnx` are served
over v2 beside them.
"""

import gc

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import demo, imported, registry, v2
from service.diagnostics import DiagnosticsAPI, hold, noop_body, runtime_state
from service.guards import AdmissionLimit, ApiKeyAuth
from service.http import BodySizeLimit, JsonErrorPages, answer_malformed_requests, refuse_remote_uploads
from service.lifecycle import STATE, drain_on_sigterm
from service.openapi import Operation, serve_completed_spec
from service.runtime import OnnxModel, load_models, verify_store
from service.settings import get_settings
from service.timeouts import replace_bentoml_timeout

settings = get_settings()
refuse_remote_uploads()
answer_malformed_requests()
replace_bentoml_timeout()
MODELS = registry.models()
ImportedModels = imported.imported_models_mixin(reserved={entry.name for entry in MODELS})
APIS = (*(entry.api for entry in MODELS), ImportedModels, *((DiagnosticsAPI,) if settings.diagnostics else ()))


def cors_config() -> dict:
    """BentoML's CORS settings: off unless origins are configured (MODEL_SERVER_CORS_ORIGINS)."""
    if not settings.cors_origins:
        return {"enabled": False}
    return {
        "enabled": True,
        "access_control_allow_origins": settings.cors_origins,
        "access_control_allow_methods": ["GET", "POST"],
        "access_control_allow_headers": ["Authorization", "X-API-Key", "Content-Type", "Inference-Header-Content-Length"],
        "access_control_expose_headers": ["X-Model-Name", "X-Model-Version", "X-Noise-Sigma", "X-Noise-Level-In-Range",
                                          "X-Denoise-Passes", "Retry-After", "Inference-Header-Content-Length"],
    }


@bentoml.service(
    name="modelserver",
    workers=settings.worker_count,
    http={"host": settings.host, "port": settings.port, "cors": cors_config()},
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
)
class ModelServer(*APIS):
    """Serves every registered and imported model; /livez, /readyz, /metrics and /docs.json come from BentoML."""

    def __init__(self) -> None:
        self.models: dict[str, OnnxModel] = load_models(type(self), settings)
        built_in = {entry.name: entry.v2 for entry in MODELS}
        self.v2_signatures = {name: built_in.get(name) or imported.signature(model.metadata.inputs, model.metadata.outputs)
                              for name, model in self.models.items()}
        drain_on_sigterm(grace_s=settings.request_timeout_s)
        # Everything loaded so far lives as long as the worker: keep the garbage collector from re-scanning
        # it on every full collection (those scans were the p99 latency spikes, docs/performance.md).
        gc.freeze()

    async def __is_ready__(self) -> bool:
        # Models are loaded and warmed in __init__; not ready once draining for shutdown.
        return bool(self.models) and not STATE.draining

    @bentoml.on_shutdown
    def close_models(self) -> None:
        for model in self.models.values():
            model.close()


async def list_models(_: Request) -> JSONResponse:
    """GET /models: every served model with its version, input spec, metrics and provider."""
    server = bentoml.get_current_service()
    return JSONResponse({"models": [model.info() for model in server.models.values()]})


# Outermost first: unauthenticated requests take no capacity, and nothing over capacity reads its body.
if settings.api_key is not None:
    ModelServer.add_asgi_middleware(
        ApiKeyAuth, api_key=settings.api_key.get_secret_value(), exempt_paths=settings.auth_exempt_paths
    )
ModelServer.add_asgi_middleware(
    AdmissionLimit, max_in_flight=settings.max_concurrent_requests, retry_after_s=settings.retry_after_s
)
ModelServer.add_asgi_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
ModelServer.add_asgi_middleware(JsonErrorPages)
# Plain Starlette routes, still behind every middleware above: the models list, the models' own routes
# (raw-body fast paths that skip BentoML's form parsing), and the Open Inference Protocol v2.
ROUTES = [Route("/models", list_models, methods=["GET"]), *(route for entry in MODELS for route in entry.routes),
          *v2.routes(), *demo.routes()]
if settings.diagnostics:
    ROUTES += [Route("/diagnostics/noop-body", noop_body, methods=["POST"]),
               Route("/diagnostics/runtime", runtime_state, methods=["GET"]),
               Route("/diagnostics/hold", hold, methods=["POST"])]
ModelServer.mount_asgi_app(Starlette(routes=ROUTES), path="/")
MODELS_ANSWER = {"type": "object", "required": ["models"],
                 "properties": {"models": {"type": "array", "items": {"type": "object"}}}}
serve_completed_spec([Operation("get", "/models", "Every served model: version, inputs, outputs, metrics, provider",
                                answer=MODELS_ANSWER, errors=("401", "503", "504")),
                      *(operation for entry in MODELS for operation in entry.operations), *v2.operations(),
                      *demo.operations()],
                     {key: fragment for entry in MODELS for key, fragment in entry.spec_extensions.items()})

# Refuse to start (one clear line, non-zero exit) rather than crash-loop workers on a missing or corrupt model.
verify_store(ModelServer.inner)
