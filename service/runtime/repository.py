"""The models one worker serves: every version of every model, which one answers, and those that failed to load.

Start-up reads the BentoML model store: every declared model directory is checked (metadata readable, ONNX file
matching its SHA-256) before any worker starts (`verify_store`), then each worker loads them. Versions loaded at run
time live in the model repository (service/runtime/state.py); each worker follows its state.json (`sync`).

A model name has versions; requests that name no version go to the default, or to the canary with its weight's
share; a shadow version gets a copy of requests, its answers discarded. A version that fails to load or warm up is
kept out and marked failed with the runtime's reason: every other model serves, and the worker stays up. A version
taken out of service stops taking new requests at once and is closed once those in flight are answered.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from modelcore.card import ModelMetadata
from service.operations.settings import Settings
from service.runtime.session import OnnxSession
from service.runtime.state import (
    STATE_FILE,
    WATCH_SECONDS,
    ModelState,
    RepositoryState,
    forget_worker,
    heartbeat,
    note_applied,
    read_state,
    state_signature,
    version_dir,
)

log = logging.getLogger("bentoml.modelserver")


class ModelNotFoundError(RuntimeError):
    """A served model is missing from the BentoML model store."""


def stored_directory(reference: Any) -> Path:
    """Where the model store keeps a declared model (a bentoml.models.BentoModel); a clear error when absent."""
    stored = reference.stored
    if stored is None:
        raise ModelNotFoundError(
            f"Model {reference.tag} is not in the BentoML model store ($BENTOML_HOME); "
            "import the shipped models with `python -m service.store import-shipped` (make serve does this)."
        )
    return Path(stored.path)


def verify_store(references: list[Any]) -> None:
    """Exit with one clear line when a declared model is missing, unreadable or fails its SHA-256 check.

    Runs when the service is imported, so `bentoml serve` stops before starting workers instead of
    restarting them in a loop; a model file that does not match its metadata is never served.
    """
    problems = []
    for reference in references:
        try:
            ModelMetadata.read(stored_directory(reference))
        except ModelNotFoundError as exc:
            problems.append(str(exc))
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            problems.append(
                f"{reference.tag} is damaged ({str(exc).splitlines()[0]}); re-import it with "
                "`python -m service.store import-shipped` or `python -m service.store import <model dir>`"
            )
    if problems:
        raise SystemExit(f"modelserver: refusing to start: {'; '.join(problems)}")


class ServedModel(Protocol):
    """What the repository needs of a served model (service/models/contract.py has the whole contract)."""

    name: str
    version: str

    def close(self) -> None: ...


@dataclass(frozen=True)
class LoadFailure:
    """A model version that could not be served, and the runtime's reason."""

    name: str
    tag: str
    reason: str


@dataclass
class Loaded:
    """One served version and the requests it is answering now (it is closed once they are done)."""

    model: Any
    in_flight: int = 0
    retired: bool = False


@dataclass
class Versions:
    """Every loaded version of one model name, and how its traffic is split."""

    loaded: dict[str, Loaded] = field(default_factory=dict)
    built_in: str | None = None  # the version from the model store (not the repository)
    default: str | None = None
    canary: tuple[str, float] | None = None
    shadow: str | None = None
    failures: dict[str, LoadFailure] = field(default_factory=dict)

    def chosen(self) -> str | None:
        """The version that answers a request naming none: the canary for its share, else the default."""
        if self.canary and self.canary[0] in self.loaded and random.random() < self.canary[1]:
            return self.canary[0]
        return self.default if self.default in self.loaded else next(iter(self.loaded), None)


class Repository:
    """The served models of this worker, by name and version."""

    def __init__(self) -> None:
        self._models: dict[str, Versions] = {}

    # loading and unloading ------------------------------------------------------------------------------------

    def load(self, model_class: Callable[[OnnxSession], Any], directory: Path, tag: str, settings: Settings,
             built_in: bool = True) -> LoadFailure | None:
        """Load, warm up and serve one stored model version; a failure is recorded and returned, never raised."""
        return self.add(tag, build(model_class, directory, tag, settings), built_in)

    def add(self, tag: str, built: Any, built_in: bool = False) -> LoadFailure | None:
        """Serve a built model version (or record why it could not be built)."""
        name = tag.split(":")[0]
        versions = self._models.setdefault(name, Versions())
        if isinstance(built, LoadFailure):
            versions.failures[tag.split(":")[-1]] = built
            return built
        version = built.version
        versions.failures.pop(version, None)
        versions.loaded[version] = Loaded(built)
        if built_in:
            versions.built_in = version
        if versions.default not in versions.loaded:
            versions.default = version
        log.info("model %s version %s is served%s", name, version, " (default)" if versions.default == version else "")
        return None

    def unload(self, name: str, version: str) -> None:
        """Stop sending requests to a version; close it once those in flight are answered."""
        versions = self._models.get(name)
        if versions is None or version not in versions.loaded:
            return
        entry = versions.loaded.pop(version)
        entry.retired = True
        if versions.default == version:
            versions.default = next(iter(versions.loaded), None)
        if versions.canary and versions.canary[0] == version:
            versions.canary = None
        if versions.shadow == version:
            versions.shadow = None
        if not versions.loaded and not versions.failures:
            del self._models[name]
        log.info("model %s version %s is no longer served", name, version)
        if entry.in_flight == 0:
            close(entry.model)

    # choosing a version ---------------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> Any | None:
        """The version a request goes to: the one it names, else the default (or the canary, for its share)."""
        versions = self._models.get(name)
        if versions is None:
            return None
        chosen = version or versions.chosen()
        entry = versions.loaded.get(chosen) if chosen else None
        return entry.model if entry else None

    def shadow_of(self, name: str) -> Any | None:
        versions = self._models.get(name)
        if versions is None or versions.shadow not in versions.loaded:
            return None
        return versions.loaded[versions.shadow].model

    def serving(self, model: Any) -> Serving:
        """A context counting the request in flight on that version (a retired version is closed after its last)."""
        return Serving(self, model)

    # what is served -------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [name for name, versions in self._models.items() if versions.loaded]

    def versions(self, name: str) -> Versions | None:
        return self._models.get(name)

    @property
    def failures(self) -> dict[str, LoadFailure]:
        """The failed version of each model that has no version serving (what /models and v2 readiness report)."""
        return {name: next(iter(versions.failures.values())) for name, versions in self._models.items()
                if versions.failures and not versions.loaded}

    def all_failures(self) -> list[LoadFailure]:
        return [failure for versions in self._models.values() for failure in versions.failures.values()]

    def __iter__(self) -> Iterator[Any]:
        """Every model's default version."""
        for name in self.names():
            model = self.get_default(name)
            if model is not None:
                yield model

    def get_default(self, name: str) -> Any | None:
        versions = self._models.get(name)
        if versions is None or versions.default not in versions.loaded:
            return None
        return versions.loaded[versions.default].model

    def all_versions(self) -> Iterator[Any]:
        for versions in list(self._models.values()):
            for entry in list(versions.loaded.values()):
                yield entry.model

    def __bool__(self) -> bool:
        return bool(self.names())

    def close(self) -> None:
        for model in list(self.all_versions()):
            close(model)
        self._models.clear()

    # following the repository's state -------------------------------------------------------------------------

    def missing(self, state: RepositoryState) -> list[tuple[str, str]]:
        """(name, version) of every version the state names that is neither served nor known to fail."""
        return [(name, version) for name, wanted in state.models.items() for version in wanted.versions
                if version not in self._models.get(name, Versions()).loaded
                and version not in self._models.get(name, Versions()).failures]

    def settle(self, state: RepositoryState) -> None:
        """Unload what the state no longer names and set every model's traffic as it says (loading is done)."""
        for name, wanted in state.models.items():
            versions = self._models.get(name)
            if versions is None:
                continue
            keep = set(wanted.versions) | ({versions.built_in} if versions.built_in else set())
            for version in set(versions.loaded) - keep:
                self.unload(name, version)
            for version in set(versions.failures) - set(wanted.versions) - {versions.built_in}:
                versions.failures.pop(version)
            self._set_traffic(versions, wanted)
            if not versions.loaded and not versions.failures:
                self._models.pop(name, None)
        for name in set(self._models) - set(state.models):
            self._only_built_in(name)

    def _set_traffic(self, versions: Versions, wanted: ModelState) -> None:
        before = (versions.default, versions.canary, versions.shadow)
        self._apply_traffic(versions, wanted)
        if (versions.default, versions.canary, versions.shadow) != before and versions.loaded:
            name = next(iter(versions.loaded.values())).model.name
            canary = f"{versions.canary[0]} at {versions.canary[1]:.0%}" if versions.canary else "none"
            log.info("model %s traffic: default %s, canary %s, shadow %s", name, versions.default, canary,
                     versions.shadow or "none")

    @staticmethod
    def _apply_traffic(versions: Versions, wanted: ModelState) -> None:
        if wanted.default in versions.loaded:
            versions.default = wanted.default
        elif versions.default not in versions.loaded:
            versions.default = versions.built_in if versions.built_in in versions.loaded else next(iter(versions.loaded), None)
        canary = wanted.canary
        versions.canary = (canary.version, canary.weight) if canary and canary.version in versions.loaded else None
        versions.shadow = wanted.shadow if wanted.shadow in versions.loaded else None

    def _only_built_in(self, name: str) -> None:
        """A model the state no longer names: back to its built-in version alone (or gone, if it has none)."""
        versions = self._models[name]
        for version in set(versions.loaded) - {versions.built_in}:
            self.unload(name, version)
        if name in self._models:
            versions.default, versions.canary, versions.shadow = versions.built_in, None, None
            versions.failures = {v: f for v, f in versions.failures.items() if v == versions.built_in}
            if not versions.loaded and not versions.failures:
                del self._models[name]


def build(model_class: Callable[[OnnxSession], Any], directory: Path, tag: str, settings: Settings) -> Any:
    """A loaded, warm model version, or the LoadFailure saying why not (safe to run off the event loop)."""
    try:
        return model_class(OnnxSession(directory, tag, settings))
    except Exception as exc:  # noqa: BLE001 - any fault of one model must not take the others down
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.error("model %s failed to load and is not served: %s", tag, reason)
        return LoadFailure(tag.split(":")[0], tag, reason)


class Serving:
    """Counts one request in flight on a model version (async context manager)."""

    def __init__(self, repository: Repository, model: Any) -> None:
        self.repository, self.model = repository, model
        self.entry: Loaded | None = None

    async def __aenter__(self) -> Any:
        versions = self.repository.versions(self.model.name)
        self.entry = versions.loaded.get(self.model.version) if versions else None
        if self.entry is not None:
            self.entry.in_flight += 1
        return self.model

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.entry is not None:
            self.entry.in_flight -= 1
            if self.entry.retired and self.entry.in_flight == 0:
                close(self.entry.model)


_libc = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def close(model: Any) -> None:
    """Close a model version's session and hand the freed memory back to the system (glibc keeps it otherwise)."""
    model.close()
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


# following the repository's state.json ------------------------------------------------------------------------

_catching_up: dict[int, asyncio.Lock] = {}


async def catch_up(repository: Repository, directory: Path, settings: Settings, class_for: Callable[[str], Any]) -> None:
    """Make this worker serve what state.json says: missing versions loaded off the event loop (and warmed up) before
    they take traffic, then unloads and traffic applied at once. One catch-up at a time per repository."""
    lock = _catching_up.setdefault(id(repository), asyncio.Lock())
    async with lock:
        signature = state_signature(directory)
        try:
            state = read_state(directory)
        except ValueError as exc:
            log.error("%s/%s is unreadable (%s); serving what was served", directory, STATE_FILE, str(exc).splitlines()[0])
            return
        for name, version in repository.missing(state):
            tag = f"{name}:{version}"
            built = await asyncio.to_thread(build, class_for(name), version_dir(directory, name, version), tag, settings)
            repository.add(tag, built)
        repository.settle(state)
        note_applied(directory, signature)


def load_state(repository: Repository, directory: Path, settings: Settings, class_for: Callable[[str], Any]) -> None:
    """At start-up, before any request: every version state.json names, loaded; its traffic applied."""
    signature = state_signature(directory)
    try:
        state = read_state(directory)
    except ValueError as exc:
        log.error("%s/%s is unreadable (%s); serving the built-in models only", directory, STATE_FILE,
                  str(exc).splitlines()[0])
        return
    for name, version in repository.missing(state):
        tag = f"{name}:{version}"
        repository.add(tag, build(class_for(name), version_dir(directory, name, version), tag, settings))
    repository.settle(state)
    note_applied(directory, signature)


async def follow(repository: Repository, directory: Path, settings: Settings, class_for: Callable[[str], Any]) -> None:
    """Watch state.json (every WATCH_SECONDS) and catch up whenever another worker or the command changes it; a
    heartbeat beside it says this worker is alive (a load elsewhere waits for live workers only)."""
    beating = asyncio.get_running_loop().create_task(beat(directory))
    seen = state_signature(directory)
    try:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            current = state_signature(directory)
            if current != seen:
                seen = current
                await catch_up(repository, directory, settings, class_for)
    finally:
        beating.cancel()
        forget_worker(directory)


async def beat(directory: Path) -> None:
    while True:
        heartbeat(directory)
        await asyncio.sleep(WATCH_SECONDS)
