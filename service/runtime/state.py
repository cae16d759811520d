"""The model repository on disk: the models loaded at run time and which version of each takes traffic.

    <repository>/<name>/<version>/model.onnx, metadata.json, MODEL_CARD.md   one folder per version
    <repository>/state.json                                                 what every worker serves

`state.json` is the one source of truth for what is loaded beyond the built-in models, each model's default
version, its canary (a version and the share of traffic it takes) and its shadow (a version that gets a copy of
live requests, answers discarded). The repository API and the `python -m service.store` command both change it
under a file lock; every worker reads it again when it changes (service/runtime/repository.py), so all workers
converge on the same models within WATCH_SECONDS plus the time to load a model. Each worker says which state it
serves in `.workers/<host>-<pid>` (touched every WATCH_SECONDS as a heartbeat), so a change answers only once every
live worker serves it: a client that loads a model and then calls it never meets a worker that has not caught up.

The repository is MODEL_SERVER_REPOSITORY, by default `repository/` inside BENTOML_HOME (which itself defaults to
the project's `.bentoml`): the command and the server find the same one from any working directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, Field

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
STAGING = ".staging"
WORKERS = ".workers"
WATCH_SECONDS = 0.5
ALIVE_WITHIN_S = 5.0  # a worker whose heartbeat file is older than this has stopped; a change does not wait for it
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[0-9a-f]{12}$")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Canary(BaseModel):
    version: str
    weight: float = Field(ge=0, le=1, description="share of the model's requests the canary version answers")


class ModelState(BaseModel):
    versions: list[str] = Field(default_factory=list, description="versions loaded from the repository")
    default: str | None = Field(None, description="the version that answers requests naming no version")
    previous_default: str | None = Field(None, description="the default before the last promotion: what rollback restores")
    canary: Canary | None = None
    shadow: str | None = Field(None, description="a version that gets a copy of every request; its answers are compared, "
                                                 "then discarded")

    # The changes the repository API and the command both make (so the two cannot drift apart).

    def add(self, version: str, make_default: bool) -> None:
        """A version loaded beside the others; the default when asked (or when there is none)."""
        if version not in self.versions:
            self.versions.append(version)
        if make_default or self.default is None:
            self.promote(version)

    def promote(self, version: str) -> None:
        """The version becomes the default; a canary or shadow on it ends (it takes all the traffic now)."""
        if self.default != version:
            self.previous_default, self.default = self.default, version
        if self.canary and self.canary.version == version:
            self.canary = None
        if self.shadow == version:
            self.shadow = None

    def set_traffic(self, wanted: dict, known: set[str]) -> None:
        """Apply a traffic change: any of "default" (a version), "canary" ({"version", "weight"}, or None to end it)
        and "shadow" (a version, or None); ValueError naming an unknown version or a bad canary, before any change."""
        def checked(version: object) -> str:
            if version not in known:
                raise ValueError(f"Version {version!r} is not loaded; loaded: {', '.join(sorted(known)) or 'none'}.")
            return str(version)

        default = checked(wanted["default"]) if "default" in wanted else None
        canary = wanted.get("canary")
        if canary is not None:
            if not isinstance(canary, dict):
                raise ValueError('canary is {"version": "<version>", "weight": 0.1}, or null to end it.')
            canary = Canary(version=checked(canary.get("version")), weight=canary_weight(canary))
        shadow = checked(wanted["shadow"]) if wanted.get("shadow") is not None else None
        if default is not None:
            self.promote(default)
        if "canary" in wanted:
            self.canary = canary
        if "shadow" in wanted:
            self.shadow = shadow

    def roll_back(self) -> None:
        """End the canary and the shadow, and restore the default from before the last promotion (if any)."""
        self.canary, self.shadow = None, None
        if self.previous_default:
            self.default, self.previous_default = self.previous_default, None


def canary_weight(canary: dict) -> float:
    weight = canary.get("weight")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        raise ValueError("canary.weight must be a number from 0 to 1: the share of requests the canary answers.")
    return float(weight)


class RepositoryState(BaseModel):
    models: dict[str, ModelState] = Field(default_factory=dict)


def default_home() -> Path:
    """BENTOML_HOME, else the project's .bentoml: what `make serve` uses, whatever the working directory."""
    return Path(os.environ.get("BENTOML_HOME") or PROJECT_ROOT / ".bentoml")


def repository_dir(configured: str | None = None) -> Path:
    """MODEL_SERVER_REPOSITORY when set, else repository/ inside the model store's home."""
    chosen = configured or os.environ.get("MODEL_SERVER_REPOSITORY")
    return Path(chosen) if chosen else default_home() / "repository"


def check_name(name: str) -> str:
    """A model name is a path component: lower-case letters, digits, '-' and '_', starting with a letter."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"Model name {name!r}: use 1-63 lower-case letters, digits, '-' or '_', starting with a letter.")
    return name


def version_dir(repository: Path, name: str, version: str) -> Path:
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"Version {version!r}: versions are the first 12 hex digits of the ONNX file's SHA-256.")
    return repository / check_name(name) / version


def read_state(repository: Path) -> RepositoryState:
    path = repository / STATE_FILE
    if not path.exists():
        return RepositoryState()
    return RepositoryState.model_validate_json(path.read_text())


def state_signature(repository: Path) -> tuple[int, int] | None:
    """What changes when state.json is rewritten (its modification time and inode), or None when there is none."""
    with contextlib.suppress(FileNotFoundError):
        stat = (repository / STATE_FILE).stat()
        return stat.st_mtime_ns, stat.st_ino
    return None


@contextlib.contextmanager
def changing_state(repository: Path) -> Iterator[RepositoryState]:
    """The state, locked against every other writer (other workers, the command), written back atomically."""
    repository.mkdir(parents=True, exist_ok=True)
    with open(repository / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = read_state(repository)
            yield state
            write_state(repository, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_state(repository: Path, state: RepositoryState) -> None:
    """Write state.json by renaming a complete file over it: a reader never sees half of one."""
    handle, temporary = tempfile.mkstemp(prefix=".state-", dir=repository)
    with os.fdopen(handle, "w") as out:
        out.write(state.model_dump_json(indent=1) + "\n")
    os.replace(temporary, repository / STATE_FILE)


def staging_dir(repository: Path) -> Path:
    """A fresh folder for a model being checked before it enters the repository (same file system: a rename moves it)."""
    (repository / STAGING).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=repository / STAGING))


def worker_file(repository: Path) -> Path:
    return repository / WORKERS / f"{os.uname().nodename}-{os.getpid()}"


def note_applied(repository: Path, signature: tuple[int, int] | None) -> None:
    """Record that this worker serves the state with this signature (and that it is alive)."""
    path = worker_file(repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(signature))
    os.replace(temporary, path)


def heartbeat(repository: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(worker_file(repository))


def forget_worker(repository: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        worker_file(repository).unlink()


def live_workers(repository: Path) -> dict[str, tuple[int, int] | None]:
    """Every live worker (heartbeat within ALIVE_WITHIN_S) -> the signature of the state it serves."""
    found = {}
    now = time.time()
    for path in (repository / WORKERS).glob("[!.]*"):
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            if now - path.stat().st_mtime <= ALIVE_WITHIN_S:
                applied = json.loads(path.read_text())
                found[path.name] = tuple(applied) if applied else None
    return found


def lagging_workers(repository: Path, signature: tuple[int, int] | None) -> list[str]:
    """The live workers that do not yet serve the state with this signature."""
    if signature is None:
        return []
    return [name for name, applied in live_workers(repository).items() if applied != tuple(signature)]


def wait_for_workers(repository: Path, signature: tuple[int, int] | None, timeout_s: float) -> list[str]:
    """Wait until every live worker serves this state; the workers still lagging when the time runs out."""
    deadline = time.monotonic() + timeout_s
    while (lagging := lagging_workers(repository, signature)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return lagging
