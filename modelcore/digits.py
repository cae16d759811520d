"""MNIST-style digit preprocessing, shared by training, the service and the tests (numpy + Pillow only).

MNIST digits are white ink on black, size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased) and placed in a 28x28 frame so that the centre of mass is at the centre.
`to_mnist_layout` reproduces that from any photo or scan of a single digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import numpy as np
from PIL import Image

from modelcore.errors import InputError

LABELS = tuple(str(digit) for digit in range(10))
SIDE = 28
BOX = 20
# Background level is read from a frame this wide (fraction of the shorter side).
BORDER_FRACTION = 0.05
# After background removal, ink weaker than this fraction of the strongest stroke is paper noise.
INK_THRESHOLD = 0.2
# Below this contrast (0-255) between paper and ink there is no digit to read.
MIN_CONTRAST = 24.0


@dataclass(frozen=True)
class Layout:
    """Where the upload's ink went in the 28x28 frame: its crop box in the upload, and where that box was pasted,
    scaled to `size` (rows, cols). Maps a 28x28 map (an explanation) back onto the upload."""

    upload_shape: tuple[int, int]
    crop: tuple[int, int, int, int]  # top, bottom, left, right in the upload
    pasted: tuple[int, int]  # top, left in the 28x28 frame
    size: tuple[int, int]  # rows, cols of the scaled crop in the frame

    def to_upload(self, frame_map: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, float]:
        """A (28, 28) map over the frame -> (map over the upload, its scale), 0 outside the ink's crop box.

        With `max_side`, uploads larger than that on a side get a map downscaled to fit (scale < 1).
        """
        height, width = self.upload_shape
        scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
        out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
        top, bottom, left, right = (round(edge * scale) for edge in self.crop)
        box = frame_map[self.pasted[0] : self.pasted[0] + self.size[0], self.pasted[1] : self.pasted[1] + self.size[1]]
        resized = Image.fromarray(box.astype(np.float32)).resize((max(1, right - left), max(1, bottom - top)),
                                                                Image.Resampling.BILINEAR)
        upload_map = np.zeros((out_h, out_w), dtype=np.float32)
        upload_map[top : top + resized.height, left : left + resized.width] = np.asarray(resized)[: out_h - top, : out_w - left]
        return upload_map, scale


def to_mnist_layout(grey: np.ndarray) -> np.ndarray:
    """(H, W) float32 greyscale in [0, 255], any polarity -> (28, 28) float32 in [0, 255], white on black."""
    return laid_out(grey)[0]


def laid_out(grey: np.ndarray) -> tuple[np.ndarray, Layout]:
    """to_mnist_layout, and the Layout that maps the frame back onto the upload."""
    ink = _ink_on_black(grey)
    top, bottom, left, right = _ink_bounds(ink)
    digit = _fit_box(ink[top:bottom, left:right])
    frame, pasted = _centre_by_mass(digit)
    return frame, Layout(grey.shape, (top, bottom, left, right), pasted, digit.shape)


def _ink_on_black(grey: np.ndarray) -> np.ndarray:
    """Invert dark-on-light input and stretch so paper is 0 and the strongest ink is 255."""
    background = _median(_border(grey))
    if background > 127.5:
        grey = 255.0 - grey
        background = 255.0 - background
    strongest = float(grey.max())
    if strongest - background < MIN_CONTRAST:
        raise InputError(
            "No digit found: the image is blank or has almost no contrast. "
            "Send a photo or scan of one handwritten digit, dark on light or light on dark.",
            HTTPStatus.UNPROCESSABLE_ENTITY,
        )
    ink = (grey - background) * (255.0 / (strongest - background))
    ink[ink < INK_THRESHOLD * 255.0] = 0.0
    return np.clip(ink, 0.0, 255.0, out=ink)


def _median(values: np.ndarray) -> float:
    """np.median of a 1-D array, by partition: the same value at a fraction of np.median's overhead."""
    middle = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, middle)[middle])
    low, high = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1]
    return float((low + high) / 2)


def _border(grey: np.ndarray) -> np.ndarray:
    width = max(1, int(min(grey.shape) * BORDER_FRACTION))
    return np.concatenate(
        [grey[:width].ravel(), grey[-width:].ravel(), grey[:, :width].ravel(), grey[:, -width:].ravel()]
    )


def _ink_bounds(ink: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so the longer side is 20 px, keeping the aspect ratio (anti-aliased, like MNIST)."""
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)


def _centre_by_mass(digit: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste into a 28x28 black frame with the ink's centre of mass at the frame's centre; (frame, (top, left))."""
    mass = digit.sum(dtype=np.float64)
    centre_row = np.dot(np.arange(digit.shape[0]), digit.sum(axis=1, dtype=np.float64)) / mass
    centre_col = np.dot(np.arange(digit.shape[1]), digit.sum(axis=0, dtype=np.float64)) / mass
    top = min(max(round(SIDE / 2 - centre_row), 0), SIDE - digit.shape[0])
    left = min(max(round(SIDE / 2 - centre_col), 0), SIDE - digit.shape[1])
    frame = np.zeros((SIDE, SIDE), dtype=np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame, (top, left)
