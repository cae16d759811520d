"""Put exported models into the BentoML model store, where the service (and `bentoml build`) find them.

    python -m service.store import artifacts/digits   # one exported model directory
    python -m service.store import-shipped            # every model shipped under artifacts/
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from modelcore.card import METADATA_FILE, ModelMetadata

SHIPPED = Path(__file__).resolve().parent.parent / "artifacts"


def import_model(directory: Path) -> str:
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
        labels={"task": metadata.task, "format": "onnx"},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("import", help="import one exported model directory")
    one.add_argument("directory", type=Path)
    commands.add_parser("import-shipped", help="import every model under artifacts/")
    args = parser.parse_args()
    tags = [import_model(args.directory)] if args.command == "import" else import_shipped()
    for tag in tags:
        print(f"model store has {tag}")


if __name__ == "__main__":
    main()
