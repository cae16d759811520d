"""How every protocol has a model answer: which version answers, counting it in flight, its per-version metrics, and
a shadow's copy of the request.

A request that names a version goes to it; one that names none goes to the model's default version, or to its
canary for the canary's share. While a version answers, it is counted in flight, so an unload or a swap waits for it
before closing the version. Each answer is recorded for its version (outcome, time, items, items flagged out of
distribution). When the model has a shadow version, the same request is answered again by it in the background,
after the caller has its answer; the two answers are compared (label agreement, output distance) and the shadow's is
discarded. Shadow work is bounded: beyond MAX_SHADOW_IN_FLIGHT copies at once, new copies are skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from modelcore.errors import InputError
from service.operations.frontdoor import SERVED_MODEL
from service.operations.metrics import observe_shadow, observe_version, shadow_skipped
from service.runtime.repository import Repository

log = logging.getLogger("bentoml.modelserver")

MAX_SHADOW_IN_FLIGHT = 64
Answerer = Callable[[Any], Awaitable[Any]]  # (the chosen model version) -> its answer
SHADOWS: set[asyncio.Task] = set()  # kept referenced until done (the event loop holds tasks only weakly)


def not_served(repository: Repository, name: str, version: str | None) -> InputError:
    """Why a model (or version) cannot answer: 404 for an unknown one, 503 for one that failed to load."""
    versions = repository.versions(name)
    if versions is None:
        return InputError(f"Unknown model {name!r}; served models: {', '.join(repository.names())} "
                          "(GET /v2/models/<name>).", 404)
    failure = versions.failures.get(version) if version else next(iter(versions.failures.values()), None)
    if failure is not None and (version or not versions.loaded):
        return InputError(f"Model {name} is not ready ({'version ' + version + ' ' if version else ''}failed to load: "
                          f"{failure.reason}); GET /models says which models serve.", 503)
    if version is not None:
        return InputError(f"Model {name} has no version {version!r}; served versions: "
                          f"{', '.join(versions.loaded) or 'none'}.", 404)
    return InputError(f"Model {name} is not ready (no version is loaded); GET /models says which models serve.", 503)


def choose(repository: Repository, name: str, version: str | None = None) -> Any:
    """The version that answers: the one named, else the default or the canary; InputError when there is none."""
    model = repository.get(name, version)
    if model is None:
        raise not_served(repository, name, version)
    return model


async def answer_with(repository: Repository, model: Any, answer: Answerer, scope: dict | None = None,
                      shadowed: bool = True) -> Any:
    """`answer(model)` with the version counted in flight and recorded; the shadow (if any) gets a copy afterwards."""
    if scope is not None:
        scope[SERVED_MODEL] = model.name
    started, outcome = time.perf_counter(), "server_error"
    result = None
    try:
        async with repository.serving(model):
            result = await answer(model)
        outcome = "success"
        return result
    except InputError:
        outcome = "client_error"
        raise
    finally:
        record(repository, model, answer, result, outcome, time.perf_counter() - started, shadowed)


def record(repository: Repository, model: Any, answer: Answerer, result: Any, outcome: str, seconds: float,
           shadowed: bool) -> None:
    """The version's metrics and the shadow's copy: a fault here is logged, never the caller's failure."""
    try:
        succeeded = outcome == "success"
        observe_version(model.name, model.version, outcome, seconds,
                        model.items(result) if succeeded else 0, model.flagged(result) if succeeded else 0)
        if succeeded and shadowed:
            copy_to_shadow(repository, model, answer, result)
    except Exception:  # noqa: BLE001 - bookkeeping must not turn an answered request into an error
        log.exception("recording %s:%s's answer failed", model.name, model.version)


def copy_to_shadow(repository: Repository, model: Any, answer: Answerer, result: Any) -> None:
    shadow = repository.shadow_of(model.name)
    if shadow is None or shadow is model:
        return
    if len(SHADOWS) >= MAX_SHADOW_IN_FLIGHT:
        shadow_skipped.labels(model.name, shadow.version).inc()
        return
    task = asyncio.get_running_loop().create_task(shadow_answer(repository, model, shadow, answer, result))
    SHADOWS.add(task)
    task.add_done_callback(SHADOWS.discard)


async def shadow_answer(repository: Repository, model: Any, shadow: Any, answer: Answerer, result: Any) -> None:
    """The shadow version's answer to the same request, compared with the one the caller got, then discarded."""
    try:
        theirs = await answer_with(repository, shadow, answer, shadowed=False)
    except Exception:  # noqa: BLE001 - a failing shadow is counted by its own metrics; the caller already has its answer
        return
    comparison = model.compare(result, theirs)
    observe_shadow(model.name, shadow.version, comparison.compared, comparison.agreed, comparison.distance)
