"""Put models into the BentoML model store, where the service (and `bentoml build`) find them.

    python -m service.store import artifacts/digits   # one exported model directory
    python -m service.store import-shipped            # every model shipped under artifacts/
    python -m service.store import-onnx my_model.onnx --name my-model [--labels cat,dog] [--description "..."]

`import-onnx` serves your own ONNX graph with no code: the file is checked (onnx.checker, and onnxruntime must
load it), its inputs and outputs are read from the graph, metadata and a model card are written beside it, and
after a restart the server offers it over the Open Inference Protocol v2 (/v2/models/<name>) and in /models.
Every check runs before anything is written: a refused file leaves the store as it was.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from modelcore.card import METADATA_FILE, MODEL_FILE, ModelMetadata, TensorSpec, file_sha256
from service.models.imported import ORT_TYPES, SOURCE_LABEL
from service.models.registry import built_in_models
from service.runtime.session import supported_versions

log = logging.getLogger("bentoml.modelserver")

SHIPPED = Path(__file__).resolve().parent.parent / "artifacts"


NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ImportRefused(ValueError):
    """A file or name import-onnx will not put in the store; the message says why and what to do."""


def import_model(directory: Path, labels: dict[str, str] | None = None) -> str:
    """Copy one exported model into the store as <name>:<version>; a no-op if that version is there."""
    metadata = ModelMetadata.read(directory)  # also checks the ONNX file against its recorded hash
    tag = f"{metadata.name}:{metadata.version}"
    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        pass
    else:
        if _same_files(directory, Path(stored.path)):
            return tag
        bentoml.models.delete(tag)  # same weights, updated metadata or card: replace the entry
    scalars = {key: value for key, value in metadata.metrics.items() if isinstance(value, (int, float, str))}
    with bentoml.models.create(
        tag,
        labels={"task": metadata.task, "format": "onnx", **(labels or {})},
        metadata={"sha256": metadata.sha256, **scalars},
    ) as model:
        for path in directory.iterdir():  # the ONNX file, metadata, card and any artefact (e.g. tokenizer.json)
            if path.is_file():
                shutil.copy2(path, model.path_of(path.name))
    return tag


def _same_files(directory: Path, stored: Path) -> bool:
    return all((stored / path.name).is_file() and (stored / path.name).read_bytes() == path.read_bytes()
               for path in directory.iterdir() if path.is_file())


def import_shipped(root: Path = SHIPPED) -> list[str]:
    """Import every model directory under artifacts/."""
    return [import_model(metadata.parent) for metadata in sorted(root.glob(f"*/{METADATA_FILE}"))]


def imported_tags(reserved: set[str]) -> list[str]:
    """The store tag of the newest version of every imported model whose name no built-in model uses."""
    newest: dict[str, Any] = {}
    for stored in bentoml.models.list():
        if stored.info.labels.get("source") != SOURCE_LABEL["source"]:
            continue
        name = stored.tag.name
        if name in reserved:
            log.warning("imported model %s is not served: a built-in model has that name", stored.tag)
            continue
        if name not in newest or stored.info.creation_time > newest[name].info.creation_time:
            newest[name] = stored
    return [str(stored.tag) for _, stored in sorted(newest.items())]


def import_onnx(path: Path, name: str, labels: list[str] | None = None, description: str = "",
                replace: bool = False) -> str:
    """Check a user's ONNX file, describe it, and put it in the store as <name>:<version>, served over v2."""
    check_name(name, replace)
    inputs, outputs = graph_signature(path)
    if labels and not any(spec.shape and spec.shape[-1] == len(labels) for spec in outputs):
        raise ImportRefused(f"{len(labels)} labels given, but no output has a last dimension of {len(labels)}.")
    with tempfile.TemporaryDirectory(prefix="import-onnx-") as staging:
        directory = Path(staging)
        shutil.copyfile(path, directory / MODEL_FILE)
        sha256 = file_sha256(directory / MODEL_FILE)
        metadata = ModelMetadata(
            name=name, version=sha256[:12], task="custom", sha256=sha256, labels=labels or [],
            summary=description or f"A user-supplied ONNX model imported from {path.name}; served over the Open "
                                   "Inference Protocol v2 as /v2/models/" + name,
            inputs=inputs, outputs=outputs,
            data={"source": f"imported by the user from {path.name}; its data and licence are the user's to state"},
            export={"imported_with": "python -m service.store import-onnx", "checks": "onnx.checker, onnxruntime load"},
        )
        metadata.write(directory)
        return import_model(directory, labels=SOURCE_LABEL)


def check_name(name: str, replace: bool) -> None:
    if not NAME_PATTERN.match(name):
        raise ImportRefused(f"Name {name!r}: use 1-63 lower-case letters, digits, '-' or '_', starting with a letter.")
    if name in {model.name for model in built_in_models()}:
        raise ImportRefused(f"Name {name!r} is a built-in model of this server; choose another --name.")
    existing = [stored for stored in bentoml.models.list() if stored.tag.name == name]
    if existing and not replace:
        ours = all(stored.info.labels.get("source") == SOURCE_LABEL["source"] for stored in existing)
        raise ImportRefused(f"A model named {name!r} is already in the store"
                            + ("; pass --replace to serve the new file under that name instead." if ours else "."))


def graph_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, after onnx.checker and an onnxruntime load; ImportRefused otherwise."""
    import onnx
    import onnxruntime as ort

    if not path.is_file():
        raise ImportRefused(f"{path} is not a file.")
    check_runtime_supports(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError, OSError,
            ValueError) as exc:  # a protobuf parse error is a DecodeError, a ValueError
        raise ImportRefused(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for unloadable graphs
        raise ImportRefused(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None

    def spec(argument) -> TensorSpec:
        if argument.type not in ORT_TYPES:
            raise ImportRefused(f"Tensor {argument.name!r} has type {argument.type}, which is not served; "
                                f"supported: {', '.join(sorted(ORT_TYPES))}.")
        shape = [dim if isinstance(dim, int) else (dim or f"dim{index}") for index, dim in enumerate(argument.shape)]
        return TensorSpec(name=argument.name, shape=shape, dtype=ORT_TYPES[argument.type][1])

    return [spec(argument) for argument in session.get_inputs()], [spec(argument) for argument in session.get_outputs()]


def check_runtime_supports(path: Path) -> None:
    """ImportRefused, naming what this onnxruntime supports and how to export for it, for a graph stamped newer."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a protobuf parse error of any kind: not an ONNX file
        raise ImportRefused(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    supported = supported_versions()
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)
    if model.ir_version <= supported.ir_version and opset <= supported.opset:
        return
    raise ImportRefused(
        f"{path.name} has IR version {model.ir_version} and ai.onnx opset {opset}; this server's onnxruntime "
        f"{supported.runtime} loads IR version <= {supported.ir_version} and opset <= {supported.opset}. Export for "
        f"them: torch.onnx.export(..., opset_version={min(opset, supported.opset)}), or convert the file with "
        f"onnx.version_converter.convert_version(model, {min(opset, supported.opset)}) and set "
        f"model.ir_version = {supported.ir_version} before onnx.save."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("import", help="import one exported model directory")
    one.add_argument("directory", type=Path)
    commands.add_parser("import-shipped", help="import every model under artifacts/")
    own = commands.add_parser("import-onnx", help="import your own ONNX graph, served over v2 after a restart")
    own.add_argument("file", type=Path)
    own.add_argument("--name", required=True, help="the model's name in /v2/models/<name> (a-z, 0-9, -, _)")
    own.add_argument("--labels", help="comma-separated class names, for a classifier's output")
    own.add_argument("--description", default="", help="one line shown in /models and the model card")
    own.add_argument("--replace", action="store_true", help="serve this file instead of an earlier import of that name")
    args = parser.parse_args()
    try:
        if args.command == "import":
            tags = [import_model(args.directory)]
        elif args.command == "import-onnx":
            labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
            tags = [import_onnx(args.file, args.name, labels, args.description, args.replace)]
        else:
            tags = import_shipped()
    except ImportRefused as exc:
        sys.exit(f"import refused: {exc}")
    for tag in tags:
        print(f"model store has {tag}")
    if args.command == "import-onnx":
        print(f"restart the server (make serve) to serve it at /v2/models/{args.name}")


if __name__ == "__main__":
    main()
