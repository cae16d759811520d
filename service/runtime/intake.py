"""Putting a model version into the repository, from the command line or a load request: every file is untrusted.

1. Names: the model name is a path component; every file name is one plain name in the one version folder of the
   request (Triton's `file:<version>/<name>`), never a path out of it (Triton's load API once wrote anywhere,
   CVE-2023-31036). Sizes are bounded by the caller (the request-size limit, 413).
2. The files are written into a staging folder inside the repository, and nowhere else.
3. The ONNX file's stamp is read: a graph newer than this onnxruntime loads is refused with the versions it does load.
4. It is proven to load and run on its example, in a child process with a memory bound and a deadline
   (service/runtime/proving.py): onnxruntime refuses external data that points outside the folder, and operators of
   custom domains (no custom-op library is ever registered); whatever fails is refused with the runtime's reason.
5. Its inputs and outputs must be types the protocol carries; a new version of an existing model must have the same
   ones, and inherits its metadata (labels, preprocessing); a new model gets metadata and a card from its graph.
6. The staging folder is renamed to <repository>/<name>/<version>: the version is the first 12 hex digits of the
   ONNX file's SHA-256, so the same file is the same version, whoever sends it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from modelcore.card import MODEL_FILE, ModelMetadata, TensorSpec, file_sha256
from service.runtime.onnx_file import ORT_TYPES, stamp_of, supported_versions
from service.runtime.proving import ProofFailed, prove
from service.runtime.state import check_name, staging_dir

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_FOLDER = re.compile(r"^[0-9]{1,9}$")


class IntakeRefused(ValueError):
    """A model version the repository will not take; the message says why and what to send instead."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Submission:
    """A model version to take in: its files by name, and what the caller says about it."""

    name: str
    files: dict[str, bytes]  # plain file names in the version folder: model.onnx, and any external data
    example_shapes: dict[str, list[int]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    description: str = ""
    source: str = "a load request"
    base: ModelMetadata | None = None  # the current version of an existing model: what the new one must match


def files_of_request(parameters: dict[str, bytes]) -> dict[str, bytes]:
    """`file:<version>/<name>` entries of a load request -> {name: bytes}; one version folder, plain names only."""
    folders, files = set(), {}
    for key, content in parameters.items():
        path = key.removeprefix("file:")
        parts = path.split("/")
        if len(parts) != 2 or not VERSION_FOLDER.match(parts[0]) or not FILE_NAME.match(parts[1]):
            raise IntakeRefused(f"File {key!r}: name files as file:<version number>/<file name> (e.g. "
                                "file:1/model.onnx), a plain file name with letters, digits, '.', '_' or '-'.")
        folders.add(parts[0])
        files[parts[1]] = content
    if len(folders) > 1:
        raise IntakeRefused(f"The request holds files of versions {sorted(folders)}: send one version per load request.")
    return files


def take_in(repository: Path, submission: Submission, memory_mb: int, timeout_s: float) -> str:
    """Check, prove and store one model version; its version (IntakeRefused, with why, otherwise)."""
    try:
        check_name(submission.name)
    except ValueError as exc:
        raise IntakeRefused(str(exc)) from None
    if MODEL_FILE not in submission.files:
        raise IntakeRefused(f"No {MODEL_FILE} in the request: send the graph as file:1/{MODEL_FILE}.")
    staged = staging_dir(repository)
    try:
        for name, content in submission.files.items():
            target = (staged / name).resolve()
            if target.parent != staged.resolve():  # FILE_NAME allows no separator; this is the belt to its braces
                raise IntakeRefused(f"File {name!r} would be written outside the model's folder.")
            target.write_bytes(content)
        metadata = checked_metadata(staged, submission, memory_mb, timeout_s)
        return moved_into_place(repository, staged, submission.name, metadata)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def checked_metadata(staged: Path, submission: Submission, memory_mb: int, timeout_s: float) -> ModelMetadata:
    model = staged / MODEL_FILE
    try:
        newer = stamp_of(model).newer_than(supported_versions())
    except ValueError as exc:
        raise IntakeRefused(f"{MODEL_FILE} is not an ONNX model ({exc}).") from None
    if newer:
        raise IntakeRefused(f"{submission.name}: {newer}")
    try:
        proof = prove(staged, submission.example_shapes, memory_mb, timeout_s)
    except ProofFailed as exc:
        raise IntakeRefused(f"{submission.name} does not run: {exc}. Give an example input the model takes "
                            "(Triton's model_warmup in the load request's config, or --example with the command).",
                            422) from None
    inputs = [tensor_spec(argument, proof.example_shapes.get(argument["name"])) for argument in proof.inputs]
    outputs = [tensor_spec(argument, None) for argument in proof.outputs]
    sha256 = file_sha256(model)
    if submission.base is not None:
        return inherited(submission.base, inputs, outputs, sha256)
    return described(submission, inputs, outputs, sha256)


def tensor_spec(argument: dict, example_shape: list[int] | None) -> TensorSpec:
    if argument["type"] not in ORT_TYPES:
        raise IntakeRefused(f"Tensor {argument['name']!r} has type {argument['type']}, which is not served (the protocol "
                            f"does not carry it here); supported: {', '.join(sorted(ORT_TYPES))}.")
    shape = [dim if isinstance(dim, int) else (dim or f"dim{index}") for index, dim in enumerate(argument["shape"])]
    return TensorSpec(name=argument["name"], shape=shape, dtype=ORT_TYPES[argument["type"]][1], example_shape=example_shape)


def inherited(base: ModelMetadata, inputs: list[TensorSpec], outputs: list[TensorSpec], sha256: str) -> ModelMetadata:
    """A new version of an existing model: same inputs and outputs required; its metadata, with this file's hash."""
    def signature(specs: list[TensorSpec]) -> list[tuple]:
        return [(spec.name, spec.dtype, len(spec.shape)) for spec in specs]

    if signature(inputs) != signature(base.inputs) or signature(outputs) != signature(base.outputs):
        raise IntakeRefused(f"A new version of {base.name} must take and give what the served one does: inputs "
                            f"{signature(base.inputs)}, outputs {signature(base.outputs)}; this file has {signature(inputs)} "
                            f"and {signature(outputs)}.")
    examples = {spec.name: spec.example_shape for spec in inputs}
    kept_inputs = [spec.model_copy(update={"example_shape": examples.get(spec.name) or spec.example_shape})
                   for spec in base.inputs]
    return base.model_copy(update={"version": sha256[:12], "sha256": sha256, "inputs": kept_inputs,
                                   "metrics": {}, "export": {**base.export, "new_version_of": base.version}})


def described(submission: Submission, inputs: list[TensorSpec], outputs: list[TensorSpec], sha256: str) -> ModelMetadata:
    if submission.labels and not any(spec.shape and spec.shape[-1] == len(submission.labels) for spec in outputs):
        raise IntakeRefused(f"{len(submission.labels)} labels given, but no output has a last dimension of "
                            f"{len(submission.labels)}.")
    return ModelMetadata(
        name=submission.name, version=sha256[:12], task="custom", sha256=sha256, labels=submission.labels,
        summary=submission.description or f"A user-supplied ONNX model from {submission.source}; served over the Open "
                                          f"Inference Protocol v2 as /v2/models/{submission.name}",
        inputs=inputs, outputs=outputs,
        data={"source": f"supplied by the user through {submission.source}; its data and licence are the user's to state"},
        export={"imported_with": submission.source, "checks": "IR version and opset against the runtime; loaded and "
                "run on its example by onnxruntime in a bounded child process"},
    )


def moved_into_place(repository: Path, staged: Path, name: str, metadata: ModelMetadata) -> str:
    """The staged version renamed to <repository>/<name>/<version> (kept as it is if that version is there)."""
    metadata.write(staged)
    target = repository / name / metadata.version
    if target.exists():
        return metadata.version
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(target)
    return metadata.version
