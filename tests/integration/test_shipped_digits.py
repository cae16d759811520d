"""The shipped digits model still does what its card says, on the official MNIST test set."""

import numpy as np
import onnxruntime as ort

from modelcore import digits
from modelcore.card import MODEL_FILE, ModelMetadata

TARGET_ACCURACY = 0.993


def test_shipped_model_reaches_its_recorded_test_accuracy(shipped_dir, mnist_test):
    metadata = ModelMetadata.read(shipped_dir / "digits")  # also verifies the file's SHA-256
    session = ort.InferenceSession(str(shipped_dir / "digits" / MODEL_FILE), providers=["CPUExecutionProvider"])
    images, labels = mnist_test
    pixels = np.stack([digits.to_mnist_layout(image.astype(np.float32)) for image in images])[:, None]
    probabilities = np.concatenate([session.run(None, {"pixels": pixels[i : i + 1000]})[0] for i in range(0, len(pixels), 1000)])
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    recorded = metadata.metrics["test_accuracy"]
    print(f"\nshipped digits {metadata.version}: test accuracy {accuracy:.4%} (card: {recorded:.4%})")
    assert metadata.metrics["test_images"] == len(labels) == 10000
    assert accuracy >= TARGET_ACCURACY
    assert abs(accuracy - recorded) <= 1 / len(labels)  # onnxruntime vs PyTorch may flip at most one near-tie
