"""The model server: every model's endpoints on one BentoML service.

    bentoml serve service.app:ModelServer      (make serve does this, after importing the models)

Adding a model: write service/<model>.py with an API mixin declaring its BentoModel and its
endpoints, then add the mixin to MODEL_APIS below.
"""

import gc

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.denoise import DenoiseAPI
from service.diagnostics import DiagnosticsAPI, hold, noop_body, runtime_state
from service.digits import DigitsAPI, classify_image_body, classify_npy_body, documented_routes
from service.guards import AdmissionLimit, ApiKeyAuth
from service.http import BodySizeLimit, answer_malformed_requests, refuse_remote_uploads
from service.lifecycle import STATE, drain_on_sigterm
from service.openapi import Operation, serve_completed_spec
from service.runtime import OnnxModel, load_models, verify_store
from service.sentiment import SentimentAPI
from service.settings import get_settings
from service.timeouts import replace_bentoml_timeout

settings = get_settings()
refuse_remote_uploads()
answer_malformed_requests()
replace_bentoml_timeout()
MODEL_APIS = (DigitsAPI, SentimentAPI, DenoiseAPI)
APIS = MODEL_APIS + ((DiagnosticsAPI,) if settings.diagnostics else ())


def cors_config() -> dict:
    """BentoML's CORS settings: off unless origins are configured (MODEL_SERVER_CORS_ORIGINS)."""
    if not settings.cors_origins:
        return {"enabled": False}
    return {
        "enabled": True,
        "access_control_allow_origins": settings.cors_origins,
        "access_control_allow_methods": ["GET", "POST"],
        "access_control_allow_headers": ["Authorization", "X-API-Key", "Content-Type"],
        "access_control_expose_headers": ["X-Model-Name", "X-Model-Version", "X-Noise-Sigma", "Retry-After"],
    }


@bentoml.service(
    name="modelserver",
    workers=settings.workers,
    http={"host": settings.host, "port": settings.port, "cors": cors_config()},
    traffic={"timeout": settings.request_timeout_s},
)
class ModelServer(*APIS):
    """Serves every model mixed in above; /livez, /readyz, /metrics and /docs.json come from BentoML."""

    def __init__(self) -> None:
        self.models: dict[str, OnnxModel] = load_models(type(self), settings)
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
# Plain Starlette routes, still behind every middleware above: the models list, and raw-body endpoints
# that skip BentoML's form parsing and temporary files (the fast path for one image per request).
ROUTES = [
    Route("/models", list_models, methods=["GET"]),
    Route("/digits/classify-image", classify_image_body, methods=["POST"]),
    Route("/digits/classify-tensor", classify_npy_body, methods=["POST"]),
]
if settings.diagnostics:
    ROUTES += [Route("/diagnostics/noop-body", noop_body, methods=["POST"]),
               Route("/diagnostics/runtime", runtime_state, methods=["GET"]),
               Route("/diagnostics/hold", hold, methods=["POST"])]
ModelServer.mount_asgi_app(Starlette(routes=ROUTES), path="/")
MODELS_ANSWER = {"type": "object", "required": ["models"],
                 "properties": {"models": {"type": "array", "items": {"type": "object"}}}}
serve_completed_spec([Operation("get", "/models", "Every served model: version, inputs, outputs, metrics, provider",
                                answer=MODELS_ANSWER, errors=("401", "503", "504")), *documented_routes()])

# Refuse to start (one clear line, non-zero exit) rather than crash-loop workers on a missing or corrupt model.
verify_store(ModelServer.inner)
