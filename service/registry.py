"""One registry of models: each model declares itself once, and everything else iterates over `MODELS`.

A model's entry (in service/<model>.py) names its BentoML API mixin (the friendly endpoints), its plain
routes and their OpenAPI operations, its Open Inference Protocol v2 signature and how a v2 request is
answered, a smoke request with the check of its answer, its load-test workloads, and how the tests build a
tiny version of it. The app, the v2 routes, /models, the locust users, the soak and benchmark runs, the smoke
helper, the fuzz and attack lists and the in-process fixtures all read this list; `tests/unit/test_registry.py`
fails when an entry lacks what every model must have.

Adding a model: service/<model>.py with its ENTRY (plus modelcore/, training/, export/ modules and tests),
and one line in MODELS below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import numpy as np

if TYPE_CHECKING:
    from starlette.routing import Route

    from service.openapi import Operation
    from service.runtime import OnnxModel


@dataclass(frozen=True)
class HttpRequest:
    """A request described without a client: what the smoke checks, load tests and the benchmark send."""

    path: str
    body: bytes
    content_type: str
    method: str = "POST"


@dataclass(frozen=True)
class HttpAnswer:
    """What came back, whatever client fetched it."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def of(cls, response: Any) -> HttpAnswer:
        """From an httpx or requests-like response."""
        return cls(response.status_code, response.headers, response.content)


@dataclass(frozen=True)
class Smoke:
    """One real request to the model's main endpoint and the check that its answer is right (not only a 200)."""

    request: Callable[[], HttpRequest]
    check: Callable[[HttpAnswer], bool]


@dataclass(frozen=True)
class Workload:
    """A load-test request stream: real payloads from `payload` ("module:function" returning [(body, content
    type[, extra headers])], resolved only by the load tools), the check that flags a wrong answer (None when
    fine, else why), and the diagnostics no-op endpoint taking the same payload (the benchmark's transport limit)."""

    name: str
    path: str
    payload: str
    items: int = 1
    noop_path: str | None = None
    check: Callable[[HttpAnswer], str | None] | None = None
    compare_with: str | None = None  # another workload of the model: the benchmark reports this one's rate / its
    half_load: bool = False  # the benchmark also measures p99 / p50 in an open loop at half this workload's rate


@dataclass(frozen=True)
class LoadProfile:
    """How the load tools exercise the model: its workloads (the first is the one-item-per-request stream the
    locust user and the mixed scenario send), its weight in the mixed scenario, the real inputs of its graph
    at a batch size ("module:function", for the in-process compute limit), and peer servers to compare with."""

    workloads: tuple[Workload, ...]
    mixed_weight: int
    compute_feeds: str
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorSig:
    """One tensor of an Open Inference Protocol v2 signature: public name, datatype(s), shape (-1 = any)."""

    name: str
    datatypes: tuple[str, ...]
    shape: tuple[int, ...]
    optional: bool = False
    binary: bool = False  # BYTES carrying a file (an encoded image): base64 strings in JSON form

    @property
    def datatype(self) -> str:
        return self.datatypes[0]


V2Infer = Callable[["OnnxModel", dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class V2Signature:
    """The model's v2 inputs and outputs, and the function answering decoded inputs with outputs by name.

    Inputs are numpy arrays (BYTES as object arrays of bytes); at least one of several alternative inputs
    (all optional) must be present; the function raises InputError for a request it cannot use.
    """

    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    infer: V2Infer
    max_batch_size: int = 0  # Triton's meaning: 0 = the shapes above include the batch axis as given


@dataclass(frozen=True)
class DryRun:
    """How the tests build a tiny real version of the model: training arguments for a one-batch run, export options."""

    training_args: tuple[str, ...] = ()
    export_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """Everything the server, the load tools and the tests need to know about one model."""

    name: str
    api: type
    v2: V2Signature
    smoke: Smoke
    load: LoadProfile
    dry_run: DryRun
    routes: tuple[Route, ...] = ()
    operations: tuple[Operation, ...] = ()
    spec_extensions: Mapping[tuple[str, str], dict] = field(default_factory=dict)  # merged into BentoML's operations

    @property
    def user_class(self) -> str:
        """The name of the model's locust user (loadtest/locustfile.py): DigitsUser, SentimentUser, ..."""
        return f"{self.name.title().replace('_', '').replace('-', '')}User"

    @property
    def paths(self) -> set[str]:
        """Every friendly path: the BentoML API routes and the plain ones."""
        from_api = {getattr(method, "route", None) for method in vars(self.api).values()}
        return {path for path in from_api if path} | {route.path for route in self.routes}


V2_INFER_PATH = "/v2/models/{name}/infer"


def problems(model: ModelEntry) -> list[str]:
    """What a registered model lacks of what every model must have (empty when complete)."""
    found = []
    paths = model.paths | {V2_INFER_PATH.format(name=model.name)}
    if not callable(model.smoke.request) or not callable(model.smoke.check):
        found.append("a smoke request and the check of its answer")
    elif model.smoke.request().path not in paths:
        found.append(f"a smoke request to one of its own endpoints (not {model.smoke.request().path})")
    if not model.load.workloads:
        found.append("a load-test workload")
    for workload in model.load.workloads:
        if workload.path not in paths:
            found.append(f"workload {workload.name} on one of its own endpoints (not {workload.path})")
        if ":" not in workload.payload or workload.check is None:
            found.append(f"workload {workload.name}: a payload reference (module:function) and an answer check")
    if model.load.mixed_weight < 1:
        found.append("a weight of at least 1 in the mixed load scenario")
    if not model.v2.inputs or not model.v2.outputs:
        found.append("a v2 signature with inputs and outputs")
    return found


def models() -> tuple[ModelEntry, ...]:
    """The registered models, in serving order (imported on demand: the entries import the service modules)."""
    from service import denoise, digits, sentiment

    return (digits.ENTRY, sentiment.ENTRY, denoise.ENTRY)


def entry(name: str) -> ModelEntry:
    for registered in models():
        if registered.name == name:
            return registered
    raise KeyError(f"no registered model named {name!r}; registered: {', '.join(m.name for m in models())}")
