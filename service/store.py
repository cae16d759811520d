"""The model store and the model repository, from the command line.

    python -m service.store import-shipped               # the built-in models under artifacts/, into the model store
    python -m service.store import artifacts/digits      # one exported model directory, into the model store
    python -m service.store import-onnx my.onnx --name my-model [--labels cat,dog] [--description "..."]
                                         [--example inputs.npz | --example-shape x=1,3] [--add-version | --replace]
    python -m service.store list                          # every model version, its state and its traffic
    python -m service.store remove NAME [--version V]     # stop serving it and delete its files
    python -m service.store promote NAME VERSION          # make a version the default (rollback undoes it)
    python -m service.store canary NAME VERSION --weight 0.1     # a share of the traffic to a candidate
    python -m service.store shadow NAME VERSION           # a copy of the traffic to a candidate, answers discarded
    python -m service.store rollback NAME                 # the previous default back; canary and shadow ended

Both live in BENTOML_HOME (default: the project's .bentoml, as `make serve` uses, whatever the working directory):
the model store (models/) holds the built-in models BentoML packs into a Bento; the repository (repository/, or
MODEL_SERVER_REPOSITORY) holds the models loaded at run time and state.json, which every running worker follows:
an import or a traffic change here is served within a second plus the model's load time, with no restart.

`import-onnx` serves your own ONNX graph with no code: the file is checked (onnx.checker where onnx is installed, and
its IR version and opset against this onnxruntime), proven to load and run on an example (yours, or zeros with every
named axis 1) in a bounded child process, described from its graph (metadata and a model card), and loaded by every
worker. Every check runs before anything is written: a refused file leaves the repository as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from service.runtime.state import check_name, default_home, repository_dir

os.environ.setdefault("BENTOML_HOME", str(default_home()))  # before BentoML reads it: the same store as the server

import bentoml  # noqa: E402
from bentoml.exceptions import NotFound  # noqa: E402

from modelcore.card import METADATA_FILE, MODEL_FILE, ModelMetadata  # noqa: E402
from service.models.registry import built_in_models  # noqa: E402
from service.runtime.intake import IntakeRefused, Submission, take_in  # noqa: E402
from service.runtime.proving import EXAMPLE_FILE  # noqa: E402
from service.runtime.state import (  # noqa: E402
    ModelState,
    changing_state,
    live_workers,
    read_state,
    state_signature,
    wait_for_workers,
)

SHIPPED = Path(__file__).resolve().parent.parent / "artifacts"


class ImportRefused(ValueError):
    """A file or name import-onnx will not put in the repository; the message says why and what to do."""


# the model store: built-in models --------------------------------------------------------------------------------


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


# the repository: models loaded at run time ----------------------------------------------------------------------


def import_onnx(path: Path, name: str, labels: list[str] | None = None, description: str = "", replace: bool = False,
                add_version: bool = False, example: Path | None = None,
                example_shapes: dict[str, list[int]] | None = None, repository: Path | None = None) -> str:
    """Check, prove and put a user's ONNX file into the repository as a version of `name`, served by every worker."""
    repository = repository or repository_dir()
    base = existing_model(name, repository, replace or add_version)
    files = {MODEL_FILE: read_file(path)}
    if example is not None:
        files[EXAMPLE_FILE] = read_file(example)
    submission = Submission(name=name, files=files, example_shapes=example_shapes or {}, labels=labels or [],
                            description=description, source=f"python -m service.store import-onnx {path.name}", base=base)
    checked_by_onnx(path)
    try:
        version = take_in(repository, submission, memory_mb=2048, timeout_s=120)
    except IntakeRefused as exc:
        raise ImportRefused(exc.message) from None
    with changing_state(repository) as state:
        entry = state.models.setdefault(name, ModelState())
        if replace:
            entry.versions, entry.canary, entry.shadow = [], None, None
        entry.add(version, make_default=not add_version)
    return f"{name}:{version}"


def existing_model(name: str, repository: Path, allowed: bool) -> ModelMetadata | None:
    """The metadata a new version of `name` must match (None for a new name); ImportRefused for a clash."""
    try:
        check_name(name)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    built_in = {model.name for model in built_in_models()}
    state = read_state(repository).models.get(name)
    if name in built_in and not allowed:
        raise ImportRefused(f"Name {name!r} is a built-in model of this server; choose another --name, or pass "
                            "--add-version to add a version of it (same inputs and outputs).")
    if state is not None and state.versions and not allowed:
        raise ImportRefused(f"A model named {name!r} is already in the repository; pass --replace to serve this file "
                            "instead, or --add-version to load it beside the served one (for a canary or a shadow).")
    if name in built_in:
        return ModelMetadata.read(Path(bentoml.models.get(f"{name}:latest").path))
    if state is not None and state.default:
        return ModelMetadata.read(repository / name / state.default)
    return None


def read_file(path: Path) -> bytes:
    if not path.is_file():
        raise ImportRefused(f"{path} is not a file.")
    return path.read_bytes()


def checked_by_onnx(path: Path) -> None:
    """onnx.checker's full check where the onnx package is installed (the serving image has none: skipped there)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError, OSError,
            ValueError) as exc:  # a protobuf parse error is a DecodeError, a ValueError
        message = str(exc).splitlines()[0]
        if "opset" in message.lower() or "ir_version" in message.lower() or "IR version" in message:
            return  # the runtime check that follows names what this server loads
        raise ImportRefused(f"{path} is not a valid ONNX model: {message}") from None


def remove(name: str, version: str | None = None, repository: Path | None = None) -> list[str]:
    """Stop serving a model's repository versions (or one) and delete their files; the versions removed."""
    repository = repository or repository_dir()
    with changing_state(repository) as state:
        entry = state.models.get(name)
        if entry is None or (version is not None and version not in entry.versions):
            raise ImportRefused(f"No {'version ' + version + ' of ' if version else ''}{name!r} in the repository.")
        removed = [version] if version else list(entry.versions)
        entry.versions = [kept for kept in entry.versions if kept not in removed]
        entry.default = None if entry.default in removed else entry.default
        entry.canary = None if entry.canary and entry.canary.version in removed else entry.canary
        entry.shadow = None if entry.shadow in removed else entry.shadow
        if not entry.versions:
            state.models.pop(name)
    for gone in removed:  # the workers drop them within a second; files go once no request can need them
        shutil.rmtree(repository / name / gone, ignore_errors=True)
    return removed


def change_traffic(name: str, repository: Path | None = None, *, default: str | None = None,
                   canary: tuple[str, float] | None = None, shadow: str | None = None, rollback: bool = False) -> ModelState:
    """Promote a version, give a canary its share, set a shadow, or roll back; the model's new state."""
    repository = repository or repository_dir()
    wanted = {**({"default": default} if default else {}), **({"shadow": shadow} if shadow else {}),
              **({"canary": {"version": canary[0], "weight": canary[1]}} if canary else {})}
    with changing_state(repository) as state:
        entry = state.models.setdefault(name, ModelState())
        if rollback:
            entry.roll_back()
        try:
            entry.set_traffic(wanted, set(entry.versions) | existing_built_in_version(name))
        except ValueError as exc:
            raise ImportRefused(f"{name}: {exc} (python -m service.store list)") from None
        return entry.model_copy()


def existing_built_in_version(name: str) -> set[str]:
    if name not in {model.name for model in built_in_models()}:
        return set()
    try:
        return {ModelMetadata.read(Path(bentoml.models.get(f"{name}:latest").path)).version}
    except (NotFound, OSError, ValueError):
        return set()


def listing(repository: Path | None = None) -> list[str]:
    """One line per model version: where it comes from and what traffic it takes."""
    repository = repository or repository_dir()
    state = read_state(repository)
    lines = []
    for model in built_in_models():
        lines.append(f"{model.name}  {', '.join(existing_built_in_version(model.name)) or '(not imported)'}  built-in")
    for name, entry in sorted(state.models.items()):
        for version in entry.versions:
            roles = [role for role, matches in (("default", entry.default == version),
                                                (f"canary {entry.canary.weight:.0%}" if entry.canary else "",
                                                 bool(entry.canary and entry.canary.version == version)),
                                                ("shadow", entry.shadow == version)) if matches]
            lines.append(f"{name}  {version}  repository  {' '.join(roles)}".rstrip())
    return lines


def parse_shapes(values: list[str] | None) -> dict[str, list[int]]:
    """--example-shape x=1,512 -> {"x": [1, 512]}."""
    shapes = {}
    for value in values or []:
        name, _, dims = value.partition("=")
        try:
            shapes[name] = [int(dim) for dim in dims.split(",")]
        except ValueError:
            raise ImportRefused(f"--example-shape {value!r}: write NAME=D1,D2,... (an input's name and its dimensions).") from None
    return shapes


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m service.store", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parse.add_subparsers(dest="command", required=True)
    one = commands.add_parser("import", help="import one exported model directory into the model store")
    one.add_argument("directory", type=Path)
    commands.add_parser("import-shipped", help="import every model under artifacts/ into the model store")
    own = commands.add_parser("import-onnx", help="your own ONNX graph into the repository, served with no restart")
    own.add_argument("file", type=Path)
    own.add_argument("--name", required=True, help="the model's name in /v2/models/<name> (a-z, 0-9, -, _)")
    own.add_argument("--labels", help="comma-separated class names, for a classifier's output")
    own.add_argument("--description", default="", help="one line shown in /models and the model card")
    own.add_argument("--example", type=Path, help="an .npz of named input arrays the model is proven to run on")
    own.add_argument("--example-shape", action="append", help="NAME=D1,D2: zeros of this shape for an input (repeat)")
    versions = own.add_mutually_exclusive_group()
    versions.add_argument("--replace", action="store_true", help="serve this file instead of the model's other versions")
    versions.add_argument("--add-version", action="store_true", help="load it beside the served version (not default)")
    commands.add_parser("list", help="every model version, where it comes from, and its traffic")
    drop = commands.add_parser("remove", help="stop serving a model's repository versions and delete them")
    drop.add_argument("name")
    drop.add_argument("--version")
    for command, text in (("promote", "make a version the default"), ("shadow", "send a copy of the traffic to a version"),
                          ("canary", "send a share of the traffic to a version")):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name")
        sub.add_argument("version")
        if command == "canary":
            sub.add_argument("--weight", type=float, required=True, help="share of requests, 0-1 (0.1 = 10%%)")
    back = commands.add_parser("rollback", help="the previous default back; canary and shadow ended")
    back.add_argument("name")
    return parse


def run(args: argparse.Namespace) -> list[str]:
    if args.command == "import":
        return [f"model store has {import_model(args.directory)}"]
    if args.command == "import-shipped":
        return [f"model store has {tag}" for tag in import_shipped()]
    if args.command == "import-onnx":
        labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
        tag = import_onnx(args.file, args.name, labels, args.description, args.replace, args.add_version, args.example,
                          parse_shapes(args.example_shape))
        return [f"repository has {tag} ({repository_dir()})", convergence()]
    if args.command == "list":
        return listing()
    if args.command == "remove":
        return [f"removed {args.name}:{version}" for version in remove(args.name, args.version)] + [convergence()]
    if args.command == "canary" and not 0 <= args.weight <= 1:
        raise ImportRefused("--weight is a share of requests from 0 to 1 (0.1 = 10%).")
    entry = change_traffic(args.name, default=args.version if args.command == "promote" else None,
                           canary=(args.version, args.weight) if args.command == "canary" else None,
                           shadow=args.version if args.command == "shadow" else None, rollback=args.command == "rollback")
    return [f"{args.name}: default {entry.default}, canary {entry.canary.version + ' ' + format(entry.canary.weight, '.0%') if entry.canary else 'none'}, "
            f"shadow {entry.shadow or 'none'}", convergence()]


def convergence(timeout_s: float = 60.0) -> str:
    """Wait for the servers running on this repository to serve the change, and say so (or that none runs)."""
    repository = repository_dir()
    workers = live_workers(repository)
    if not workers:
        return "no server is running on this repository: the change is served when one starts"
    lagging = wait_for_workers(repository, state_signature(repository), timeout_s)
    if lagging:
        return f"{len(lagging)} of {len(workers)} running workers do not serve it yet after {timeout_s:.0f} s: see their log"
    return f"served by every running worker ({len(workers)})"


def main() -> None:
    args = parser().parse_args()
    try:
        lines = run(args)
    except (ImportRefused, ValueError) as exc:
        sys.exit(f"{args.command} refused: {exc}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
