"""Fixtures on real things: MNIST files, a one-batch trained model exported to a temp dir, a real server."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

# BentoML reads these at import: point its home at a throwaway store before anything imports it.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="modelserver-test-bentoml-")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from modelcore import mnist  # noqa: E402
from modelcore.images import png_bytes  # noqa: E402
from service.models.registry import built_in_models  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    """Import the ONNX exporter's op library (onnxscript parses the source of hundreds of functions with `ast` as it
    is imported) now, while the test process has one thread. Imported by the first denoise export in the middle of
    a full run instead, it once failed with CPython 3.11.7's spurious "AST constructor recursion depth mismatch"
    SystemError, a bug of its AST conversion seen in threaded processes (python/cpython#106905, fixed in later
    releases). Absent where torch is not installed."""
    if importlib.util.find_spec("torch") and importlib.util.find_spec("onnxscript"):
        importlib.import_module("onnxscript.function_libs.torch_lib.ops")


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    """artifacts/: the trained models the repository ships."""
    return SHIPPED


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The official MNIST files: $MNIST_DIR, else ../shared/data/mnist, else a verified download."""
    if not os.environ.get(mnist.ENV_VAR) and SHARED_MNIST.is_dir():
        return mnist.resolve_dir(SHARED_MNIST)
    return mnist.resolve_dir()


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Official 10k test images (uint8, N x 28 x 28) and labels."""
    return mnist.load("test", mnist_dir)



@pytest.fixture(scope="session")
def digits(mnist_test) -> tuple[np.ndarray, np.ndarray]:
    """Six MNIST test digits: (28x28 pixels as FP32, the same as PNG files)."""
    images = mnist_test[0][:6]
    return images.astype(np.float32), np.array([png_bytes(image) for image in images], dtype=object)

class TinyModels:
    """Every registered model trained for one batch (its training module's DRY_RUN_ARGS) and exported (its export
    module's DRY_RUN_OPTIONS), each built once per session on first use: real tiny models for the integration tests."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.checkpoints: dict[str, Path] = {}
        self.exports: dict[str, Path] = {}

    def checkpoint(self, name: str) -> Path:
        if name not in self.checkpoints:
            training = importlib.import_module(f"training.{name}")
            out = self.factory.mktemp(f"tiny-{name}-run")
            training.train(training.parse_args(["--dry-run", "--out", str(out), *training.DRY_RUN_ARGS]))
            self.checkpoints[name] = out / "checkpoint.pt"
        return self.checkpoints[name]

    def export(self, name: str) -> Path:
        if name not in self.exports:
            out = self.factory.mktemp(f"tiny-{name}-export")
            export = importlib.import_module(f"export.{name}")
            export.run(self.checkpoint(name), out, **export.DRY_RUN_OPTIONS)
            self.exports[name] = out
        return self.exports[name]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_exports(tiny: TinyModels) -> dict[str, Path]:
    """Every registered model's tiny export, by name."""
    return {model.name: tiny.export(model.name) for model in built_in_models()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny: TinyModels) -> Path:
    return tiny.checkpoint("digits")


@pytest.fixture(scope="session")
def tiny_export(tiny: TinyModels) -> Path:
    return tiny.export("digits")


@pytest.fixture(scope="session")
def tiny_sentiment_checkpoint(tiny: TinyModels) -> Path:
    return tiny.checkpoint("sentiment")


@pytest.fixture(scope="session")
def tiny_sentiment_export(tiny: TinyModels) -> Path:
    return tiny.export("sentiment")


@pytest.fixture(scope="session")
def tiny_denoise_checkpoint(tiny: TinyModels) -> Path:
    return tiny.checkpoint("denoise")


@pytest.fixture(scope="session")
def tiny_denoise_export(tiny: TinyModels) -> Path:
    return tiny.export("denoise")
