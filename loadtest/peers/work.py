"""The work every peer does per request, identical to this server's: the same ONNX files on one onnxruntime thread
per process, the project's own preprocessing (modelcore), the same answers. Needs only numpy, Pillow, onnxruntime
and tokenizers, so it runs in each peer's own virtual environment (with the repository on PYTHONPATH).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import onnxruntime

from modelcore import digits
from modelcore.images import decode_grey
from modelcore.sentiment import TextEncoder

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
MAX_IMAGE_PIXELS = 4096 * 4096
LABELS = ("negative", "neutral", "positive")
OOD_THRESHOLD = 0.5  # artifacts/digits/metadata.json: preprocessing.ood_threshold


@functools.cache
def session(model: str) -> onnxruntime.InferenceSession:
    """One model's session with one intra-op thread (one process per core, as every peer here is configured)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(ARTIFACTS / model / "model.onnx"), options,
                                        providers=["CPUExecutionProvider"])


def pixels(png: bytes) -> np.ndarray:
    """An uploaded photo or scan -> (1, 28, 28) float32 in MNIST layout: the project's preprocessing."""
    return digits.to_mnist_layout(decode_grey(png, MAX_IMAGE_PIXELS))[None]


def classify_digits(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) -> (probabilities (N, 10), ood_score (N,))."""
    probabilities, ood = session("digits").run(["probabilities", "ood_score"], {"pixels": batch[:, None]})
    return probabilities, ood


def digit_answer(probabilities: np.ndarray, ood: float) -> dict:
    return {"label": int(probabilities.argmax()), "probabilities": probabilities.tolist(),
            "in_distribution": bool(ood <= OOD_THRESHOLD), "ood_score": float(ood)}


@functools.cache
def encoder() -> TextEncoder:
    return TextEncoder(ARTIFACTS / "sentiment" / "tokenizer.json", 64)


def classify_texts(texts: list[str]) -> list[dict]:
    """Texts -> one {"label", "probabilities", "truncated"} each, like /sentiment/classify."""
    encoded = encoder().encode(texts)
    (probabilities,) = session("sentiment").run(None, {"input_ids": encoded.input_ids,
                                                       "attention_mask": encoded.attention_mask})
    return [{"label": LABELS[int(row.argmax())], "probabilities": dict(zip(LABELS, row.tolist())), "truncated": cut}
            for row, cut in zip(probabilities, encoded.truncated)]


def denoise_png(png: bytes, sigma: float | None = None) -> bytes:
    """A noisy greyscale PNG -> the cleaned PNG: the project's tiling, the model's calibration, one pass as given
    and one turned 180 degrees (the shipped self-ensemble), stitched back."""
    import json

    from PIL import Image

    from modelcore.denoise import from_tiles, oriented, self_ensemble, to_tiles

    metadata = json.loads((ARTIFACTS / "denoise" / "metadata.json").read_text())["preprocessing"]
    plane = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0
    feeds, tiling, grid = to_tiles(plane, sigma, calibration=metadata.get("sigma_calibration"))
    passes = tuple(metadata.get("self_ensemble", ("identity",)))
    (output,) = session("denoise").run(None, {"noisy": oriented(feeds["noisy"], passes),
                                               "sigma": np.tile(feeds["sigma"], (len(passes), 1))})
    clean = from_tiles(self_ensemble(output, feeds["noisy"], passes), tiling, grid, plane.shape)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(clean, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
