"""What the explanation endpoints share: random masks for image attributions, word spans for text ones, and
heat-map overlays. Every explanation runs through the model's own
onnxruntime session and batcher; nothing here needs torch.
"""

from __future__ import annotations

import functools
import io
import re

import numpy as np
from PIL import Image

# RISE (Petsiuk et al., 2018): the model sees the input under random masks; a pixel's attribution is the mean
# score of the predicted class when the pixel was kept minus when it was removed. 128 masks on a 14x14 grid
# (2-pixel cells, bilinear, randomly shifted), half kept: measured on 1,000 held-out digits, erasing the map's
# top ink first lowers the prediction about twice as fast as erasing ink at random (docs: the digits card).
RISE_MASKS = 128
RISE_CELLS = 14
RISE_KEEP = 0.5
RISE_SEED = 2026


@functools.cache
def rise_masks(side: int, count: int = RISE_MASKS, cells: int = RISE_CELLS, keep: float = RISE_KEEP,
               seed: int = RISE_SEED) -> np.ndarray:
    """(count, side, side) float32 masks in [0, 1], the same for every request (explanations are reproducible)."""
    rng = np.random.default_rng(seed)
    cell = side / cells
    grid = (rng.random((count, cells + 1, cells + 1)) < keep).astype(np.float32)
    upsampled = round((cells + 1) * cell)
    shifts = rng.integers(0, max(1, round(cell)), (count, 2))
    masks = [np.asarray(Image.fromarray(g).resize((upsampled, upsampled), Image.Resampling.BILINEAR))[r : r + side, c : c + side]
             for g, (r, c) in zip(grid, shifts)]
    return np.stack(masks).astype(np.float32)


def rise_attribution(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(side, side) attribution: mean score where each pixel was kept minus where it was removed."""
    kept = np.tensordot(scores, masks, axes=1) / np.maximum(masks.sum(axis=0), 1e-6)
    removed = np.tensordot(scores, 1 - masks, axes=1) / np.maximum((1 - masks).sum(axis=0), 1e-6)
    return (kept - removed).astype(np.float32)


def overlay_png(image: Image.Image, heat: np.ndarray) -> bytes:
    """The image in grey with the positive part of `heat` (any size; resized to the image) in red on top."""
    base = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32)
    resized = np.asarray(Image.fromarray(heat.astype(np.float32)).resize(image.size, Image.Resampling.BILINEAR))
    strength = np.clip(resized / max(float(resized.max()), 1e-9), 0, 1)[..., None] * 0.7
    red = np.array([230.0, 30.0, 30.0])
    blended = base * (1 - strength) + red * strength
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


WORD = re.compile(r"[\w'’-]+|[^\w\s]+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words in a text; punctuation runs and emoji count as words."""
    return [(match.start(), match.end()) for match in WORD.finditer(text)]


def without_span(text: str, span: tuple[int, int]) -> str:
    """The text with one word removed (and the space that separated it)."""
    start, end = span
    return (text[:start].rstrip() + " " + text[end:].lstrip()).strip()
