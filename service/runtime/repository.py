"""The models one worker serves, by name: each model-store entry loaded into its served class, isolated.

Start-up reads the BentoML model store: every declared model directory is checked (metadata readable, ONNX file
matching its SHA-256) before any worker starts (`verify_store`), then each worker loads them (`Repository.load`).
A model that fails to load or warm up is kept out and marked failed with the runtime's reason: every other
model serves, and the worker stays up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from modelcore.card import ModelMetadata
from service.operations.settings import Settings
from service.runtime.session import OnnxSession

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
    """A model that could not be served, and the runtime's reason."""

    name: str
    tag: str
    reason: str


class Repository:
    """The served models of this worker by name, and those that failed to load."""

    def __init__(self) -> None:
        self._served: dict[str, ServedModel] = {}
        self.failures: dict[str, LoadFailure] = {}

    def load(self, model_class: Callable[[OnnxSession], ServedModel], directory: Path, tag: str,
             settings: Settings) -> None:
        """Load, warm up and serve one stored model; a failure is recorded, never raised."""
        name = tag.split(":")[0]
        try:
            self._served[name] = model_class(OnnxSession(directory, tag, settings))
        except Exception as exc:  # noqa: BLE001 - any fault of one model must not take the others down
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("model %s failed to load and is not served: %s", tag, reason)
            self.failures[name] = LoadFailure(name, tag, reason)
        else:
            self.failures.pop(name, None)

    def get(self, name: str) -> ServedModel | None:
        return self._served.get(name)

    def names(self) -> list[str]:
        return list(self._served)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._served.values()))

    def __bool__(self) -> bool:
        return bool(self._served)

    def close(self) -> None:
        for model in self:
            model.close()
        self._served.clear()
