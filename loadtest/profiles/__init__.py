"""What the load tools and the tests need to know about each model: its load profile, found by the model's name.

`loadtest/profiles/<model>.py` holds `PROFILE`: a smoke request with the check of its answer (the tests, the
container and cluster checks send it), the request streams the locust users, the soak and the benchmark send, the
model's weight in the mixed scenario, and its graph's real inputs at a batch size (the benchmark's compute limit).
The serving code never reads any of this; tests/unit/test_registry.py fails when a registered model has no profile.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from service.models.registry import built_in_models


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

    def unexpected(self) -> str:
        """What a check reports when this answer is not the one it wanted."""
        return f"unexpected answer {self.status}: {self.body[:200]!r}"

    def results_wrong(self, result_ok: Callable[[dict], bool]) -> str | None:
        """None when this is a 200 whose JSON "results" are all `result_ok`, else what is wrong."""
        results = json.loads(self.body).get("results", []) if self.status == 200 else []
        return None if results and all(result_ok(result) for result in results) else self.unexpected()


@dataclass(frozen=True)
class Smoke:
    """One real request to the model's main endpoint and the check that its answer is right (not only a 200)."""

    request: Callable[[], HttpRequest]
    check: Callable[[HttpAnswer], bool]


Body = tuple  # (body bytes, content type) or (body bytes, content type, {extra header: value})


@dataclass(frozen=True)
class Workload:
    """A load-test request stream: real payloads, the check that flags a wrong answer (None when fine, else why),
    and the diagnostics no-op endpoint taking the same payload (the benchmark's transport limit)."""

    name: str
    path: str
    payload: Callable[[], list[Body]]
    check: Callable[[HttpAnswer], str | None]
    items: int = 1
    noop_path: str | None = None
    compare_with: str | None = None  # another workload of the model: the benchmark reports this one's rate / its
    half_load: bool = False  # the benchmark also measures p99 / p50 in an open loop at half this workload's rate


Feeds = Callable[[int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Profile:
    """How the load tools and tests exercise one model. The first workload is the one-item-per-request stream the
    locust user and the mixed scenario send; `compute_feeds(served_model)` gives the graph's inputs at a batch size."""

    name: str
    smoke: Smoke
    workloads: tuple[Workload, ...]
    mixed_weight: int
    compute_feeds: Callable[[Any], Feeds]

    @property
    def user_class(self) -> str:
        """The name of the model's locust user (loadtest/locustfile.py): DigitsUser, SentimentUser, ..."""
        return f"{self.name.title().replace('_', '').replace('-', '')}User"

    def workload(self, name: str) -> Workload:
        return next(workload for workload in self.workloads if workload.name == name)


def profile(name: str) -> Profile:
    """The load profile of a model, from loadtest/profiles/<name>.py."""
    try:
        return importlib.import_module(f"loadtest.profiles.{name}").PROFILE
    except ModuleNotFoundError:
        raise KeyError(f"model {name!r} has no load profile: add loadtest/profiles/{name}.py with PROFILE") from None


def profiles() -> tuple[Profile, ...]:
    """Every registered model's profile, in the registry's order."""
    return tuple(profile(model.name) for model in built_in_models())


def problems(found: Profile, paths: set[str]) -> list[str]:
    """What a profile lacks of what every model's must have, given the model's own endpoint paths."""
    missing = []
    paths = paths | {f"/v2/models/{found.name}/infer"}
    if found.smoke.request().path not in paths:
        missing.append(f"a smoke request to one of its own endpoints (not {found.smoke.request().path})")
    if not found.workloads:
        missing.append("a load-test workload")
    for workload in found.workloads:
        if workload.path not in paths:
            missing.append(f"workload {workload.name} on one of its own endpoints (not {workload.path})")
    if found.mixed_weight < 1:
        missing.append("a weight of at least 1 in the mixed load scenario")
    return missing
