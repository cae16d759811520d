"""The model contract: what every served model declares once and does the same way for every protocol.

A served model is one class, in the spirit of LitServe's `decode_request / predict / encode_response` and
MLServer's typed `load / predict`:

- it declares its Open Inference Protocol signature once (`inputs`, `outputs`: names, datatypes, shapes) and its
  friendly endpoints (`endpoints`: path, the wire form of the body, the answer's schema);
- it decodes each wire form (a multipart upload, a raw body, a JSON document, v2 tensors) into one internal
  batch, predicts on that batch through its runtime session (which batches concurrent requests), and encodes
  the prediction once per protocol (`Prediction.rows` for the friendly JSON, `Prediction.tensors` for v2).

The protocols (service/protocols/) are generic over this contract: they parse the wire and call the methods an
endpoint names, so a model never sees HTTP. An imported ONNX graph is the same contract with a generic
implementation (service/models/imported.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np
from pydantic import BaseModel

from modelcore.errors import InputError
from service.operations.settings import ModelSettings, load

if TYPE_CHECKING:
    from service.runtime.session import OnnxSession


@dataclass(frozen=True)
class TensorSig:
    """One tensor of the Open Inference Protocol signature: public name, datatype(s), shape (-1 = any)."""

    name: str
    datatypes: tuple[str, ...]
    shape: tuple[int, ...]
    optional: bool = False
    binary: bool = False  # BYTES carrying a file (an encoded image): base64 strings in JSON form

    @property
    def datatype(self) -> str:
        return self.datatypes[0]


# The wire forms a friendly endpoint's body may take -------------------------------------------------------


@dataclass(frozen=True)
class Multipart:
    """multipart/form-data with file fields (each passed to the method as an Upload) and optional typed fields."""

    files: tuple[str, ...]
    fields: type[BaseModel] | None = None  # the non-file form fields, validated (strings coerced)


@dataclass(frozen=True)
class RawBody:
    """The body itself, passed to the method as an Upload named `parameter`; any content type is accepted."""

    parameter: str
    media_types: tuple[str, ...]  # what the documentation lists


@dataclass(frozen=True)
class JsonBody:
    """An application/json object validated by `schema`; its fields are the method's keyword arguments."""

    schema: type[BaseModel]


@dataclass(frozen=True)
class Upload:
    """A file as it came: its bytes and where it was sent, for error messages that say where to fix it."""

    data: bytes
    where: str  # e.g. "in the multipart field 'image'", "as the request body"


@dataclass(frozen=True)
class QueryParameter:
    """An optional query parameter, passed to the method as a keyword argument when present."""

    name: str
    description: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Endpoint:
    """One friendly endpoint: its path, the body's wire form, the model method that answers, the answer's schema."""

    path: str
    method: str  # the name of the model's coroutine method answering it
    body: Multipart | RawBody | JsonBody
    answer: type[BaseModel] | None = None  # the JSON answer's schema (None: binary content only)
    answer_types: tuple[str, ...] = ("application/json",)
    query: tuple[QueryParameter, ...] = ()
    summary: str = ""  # default: the first line of the method's docstring


@dataclass(frozen=True)
class Binary:
    """A binary answer (an image) with its media type and headers."""

    content: bytes
    media_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Prediction:
    """A batch's outputs, computed once, encoded for each protocol."""

    def rows(self) -> list[dict[str, Any]]:
        """One friendly JSON object per item."""
        raise NotImplementedError

    def tensors(self) -> dict[str, np.ndarray]:
        """The v2 outputs by name."""
        raise NotImplementedError


class ServedModel:
    """One model version ready to serve: its declarations, its session, and decode -> predict -> encode."""

    name: ClassVar[str]
    task: ClassVar[str] = "custom"
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    endpoints: ClassVar[tuple[Endpoint, ...]] = ()
    max_batch_size: ClassVar[int] = 0  # Triton's meaning: 0 = the v2 shapes include the batch axis as given
    settings_class: ClassVar[type[ModelSettings] | None] = None

    def __init__(self, session: OnnxSession) -> None:
        self.session = session
        self.settings = load(self.settings_class) if self.settings_class else None

    @property
    def version(self) -> str:
        return self.session.version

    @property
    def metadata(self):
        return self.session.metadata

    def reference(self) -> dict[str, str]:
        """The short identification every answer carries."""
        return {"name": self.session.name, "version": self.version}

    def info(self) -> dict[str, Any]:
        """What GET /models says about this model."""
        return self.session.info()

    # The v2 path: the same three steps as every friendly endpoint -------------------------------------------

    async def infer_tensors(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """v2 inputs by name -> v2 outputs by name."""
        return (await self.predict(await self.decode_tensors(tensors))).tensors()

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> Any:
        """The request's v2 tensors (already checked against `inputs`) -> the model's internal batch."""
        raise NotImplementedError

    async def predict(self, batch: Any) -> Prediction:
        """The internal batch -> its prediction, batched with concurrent requests by the session."""
        raise NotImplementedError

    def close(self) -> None:
        self.session.close()

    # What the repository reports per version: items answered, items flagged, agreement with another version ---

    def items(self, answer: Any) -> int:
        """How many items (images, texts) an answer holds: its labels, else a v2 answer's batch (first) dimension."""
        labels = labels_of(answer)
        if labels:
            return len(labels)
        arrays = [value for value in answer.values() if isinstance(value, np.ndarray)] if isinstance(answer, dict) else []
        return int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1

    def flagged(self, answer: Any) -> int:
        """How many of an answer's items the model flags as out of distribution (0 for models with no such flag)."""
        return 0

    def compare(self, answer: Any, other: Any) -> Comparison:
        """How another version's answer to the same request agrees with this one's: labels, or output distance."""
        ours, theirs = labels_of(answer), labels_of(other)
        if ours and len(ours) == len(theirs):
            return Comparison(len(ours), sum(a == b for a, b in zip(ours, theirs)), output_distance(answer, other))
        return Comparison(1, 0, output_distance(answer, other))


@dataclass(frozen=True)
class Comparison:
    """A shadow version's answer against the default's: items compared, labels equal, mean |output difference|."""

    compared: int
    agreed: int
    distance: float


def labels_of(answer: Any) -> list:
    """The labels an answer gives, friendly JSON ({"label"} or {"results": [...]}) or v2 tensors ({"label": array})."""
    if isinstance(answer, dict):
        if "results" in answer:
            return [result.get("label") for result in answer["results"]]
        if "label" in answer:
            label = answer["label"]
            return [label] if not isinstance(label, np.ndarray) else label.ravel().tolist()
    return []


def output_distance(answer: Any, other: Any) -> float:
    """Mean absolute difference of the two answers' scores (probabilities, or a v2 model's first numeric output)."""
    ours, theirs = _scores(answer), _scores(other)
    if ours is None or theirs is None or ours.shape != theirs.shape or not ours.size:
        return 0.0
    return float(np.abs(ours - theirs).mean())


def _scores(answer: Any) -> np.ndarray | None:
    if not isinstance(answer, dict):
        return None
    rows = answer["results"] if "results" in answer else [answer]
    if rows and all(isinstance(row, dict) and "probabilities" in row for row in rows):
        return np.asarray([list(row["probabilities"].values()) if isinstance(row["probabilities"], dict)
                           else row["probabilities"] for row in rows], dtype=np.float64)
    numeric = [value for value in answer.values() if isinstance(value, np.ndarray) and value.dtype.kind == "f"]
    return numeric[0].astype(np.float64) if numeric else None


def only_one_of(tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> str:
    """The one input given among alternatives, or InputError naming them."""
    given = [name for name in names if name in tensors]
    if len(given) != 1 or len(tensors) != 1:
        raise InputError(f"Send exactly one of the inputs {' or '.join(names)}.")
    return given[0]
