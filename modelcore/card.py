"""Model metadata: written next to the ONNX file by export, read by the service and the model store.

What describes a model (input spec, labels, preprocessing, provenance, metrics, training config)
travels with the model in `metadata.json`; `MODEL_CARD.md` is its human-readable rendering.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"


class TensorSpec(BaseModel):
    """One graph input or output, as the service must feed or read it."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int | str]
    dtype: str
    description: str = ""
    example_shape: list[int] | None = Field(None, description="a valid concrete shape, for warm-up; default: 1 per named axis")

    def example(self) -> list[int]:
        return self.example_shape or [1 if isinstance(dim, str) else dim for dim in self.shape]


class ModelMetadata(BaseModel):
    """Everything the service and a reader of the card need to know about one exported model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str = Field(description="first 12 hex digits of the ONNX file's SHA-256")
    task: str
    summary: str
    labels: list[str] = []
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: dict[str, Any] = {}
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    export: dict[str, Any] = {}
    explanations: dict[str, Any] = {}
    sha256: str

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        """Load `metadata.json` from a model directory and check the ONNX file against its hash."""
        metadata = cls.model_validate_json((directory / METADATA_FILE).read_text())
        actual = file_sha256(directory / MODEL_FILE)
        if actual != metadata.sha256:
            raise ValueError(f"{directory / MODEL_FILE} has SHA-256 {actual}, metadata says {metadata.sha256}")
        return metadata

    def write(self, directory: Path, card_extra: str = "") -> None:
        """Write `metadata.json` and `MODEL_CARD.md` into the model directory."""
        (directory / METADATA_FILE).write_text(self.model_dump_json(indent=2) + "\n")
        (directory / CARD_FILE).write_text(self.render_card(card_extra))

    def rewrite(self, directory: Path, *sections: str) -> None:
        """Write `metadata.json`, and replace these sections (by title) of the card already there: for figures
        measured after export, whose card has sections only the export renders."""
        (directory / METADATA_FILE).write_text(self.model_dump_json(indent=2) + "\n")
        card = (directory / CARD_FILE).read_text()
        for section in sections:
            card = with_section(card, section)
        (directory / CARD_FILE).write_text(card)

    def summary_info(self) -> dict[str, Any]:
        """The public description served by the models endpoint (no training internals)."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "summary": self.summary,
            "labels": self.labels,
            "inputs": [spec.model_dump() for spec in self.inputs],
            "outputs": [spec.model_dump() for spec in self.outputs],
            "preprocessing": self.preprocessing,
            "metrics": {k: v for k, v in self.metrics.items() if not isinstance(v, (list, dict))},
            "data": {k: self.data[k] for k in ("dataset", "licence") if k in self.data},
        }

    def render_card(self, extra: str = "") -> str:
        """A Markdown model card from the metadata."""
        sections = [
            f"# Model card: {self.name} ({self.version})\n\n{self.summary}\n",
            _section("Intended use and interface", {"task": self.task, "labels": self.labels,
                                                     "inputs": [s.model_dump() for s in self.inputs],
                                                     "outputs": [s.model_dump() for s in self.outputs]}),
            _section("Preprocessing", self.preprocessing),
            _section("Data: provenance and licence", self.data),
            metrics_section(self.metrics),
            _section("Training", self.training),
            _section("Export", self.export),
            explanations_section(self.explanations),
            extra,
            f"\nFiles: `{MODEL_FILE}` (SHA-256 `{self.sha256}`), `{METADATA_FILE}` (this card's source).\n",
        ]
        return "\n".join(part for part in sections if part)


EXPLANATIONS_TITLE = "## Explanations: methods, cost, limits and measured faithfulness"


def explanations_section(explanations: dict[str, Any]) -> str:
    """The card section on the model's explanation endpoint (and out-of-distribution flag, where it has one)."""
    if not explanations:
        return ""
    return _section(EXPLANATIONS_TITLE.removeprefix("## "), explanations)


def with_section(card: str, section: str) -> str:
    """The card with the section of the same title replaced by `section` (or added before the files line)."""
    if not section:
        return card
    title = section.split("\n", 1)[0]
    start = card.find(title + "\n")
    if start >= 0:
        following = [i for i in (card.find("\n## ", start + 1), card.find("\nFiles: ", start + 1)) if i >= 0]
        return card[:start] + section.rstrip("\n") + "\n" + card[min(following) if following else len(card):]
    files = card.rfind("\nFiles: ")
    return card[:files] + "\n" + section.rstrip("\n") + "\n" + card[files:] if files >= 0 else card + "\n" + section


METRICS_TITLE = "## Metrics (held-out test data, never used for training or tuning)"


def metrics_section(metrics: dict[str, Any]) -> str:
    return _section(METRICS_TITLE.removeprefix("## "), metrics)


LEVERS_TITLE = "## Log of quality levers (each measured on its own)"


def levers_section(levers: list[dict[str, str]] | None) -> str:
    """The card's table of quality levers (metrics.levers: lever, measured, kept), one row each."""
    if not levers:
        return ""
    rows = "\n".join(f"| {lever['lever']} | {lever['measured']} | {lever['kept']} |" for lever in levers)
    return f"{LEVERS_TITLE}\n\n| lever | measured | kept |\n|---|---|---|\n{rows}\n"


def record_metrics(directory: Path, metrics: dict[str, Any], *sections: str) -> ModelMetadata:
    """Add figures measured after export to a model's metadata.json and card (its metrics section, and any
    `sections` by title); the model file is untouched."""
    metadata = ModelMetadata.read(directory)
    metadata.metrics.update(metrics)
    metadata.rewrite(directory, metrics_section(metadata.metrics), *sections)
    return metadata


def _section(title: str, content: dict[str, Any]) -> str:
    if not content:
        return ""
    rows = "\n".join(f"- **{key}**: {_inline(value)}" for key, value in content.items())
    return f"## {title}\n\n{rows}\n"


def _inline(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    return str(value)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def credits_table(photographs: dict | None) -> str:
    """The model card section crediting the photographs a model learned from (authors, licences, changes made)."""
    if not photographs or not photographs.get("credits"):
        return ""
    rows = [f"| {c['file']} | {c['author']} | {c['licence']} | {c['package']} |" for c in photographs["credits"]]
    return ("\n## Photograph credits\n\nNatural photographs from Debian packages, each under its own licence "
            "(CC-BY-4.0: https://creativecommons.org/licenses/by/4.0/, CC-BY-SA-4.0: "
            "https://creativecommons.org/licenses/by-sa/4.0/, CC-BY-SA-3.0: https://creativecommons.org/licenses/by-sa/3.0/, "
            "CC0-1.0; the OpenCV sample images: Apache-2.0 AND BSD-3-Clause, \"OpenCV sample images, Debian opencv-doc "
            f"4.6.0+dfsg-12\"). Modified: {photographs.get('modification', 'downscaled')}.\n\n"
            "| file | author / copyright holder | licence | source package |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
