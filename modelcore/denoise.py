"""Denoising helpers shared by training, evaluation and serving (numpy only).

The network works on one greyscale plane in [0, 1] at a time, with a noise-level map: colour images
are denoised channel by channel. Large images are cut into overlapping tiles so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Median absolute deviation of Gaussian noise is 0.6745 sigma.
MAD_TO_SIGMA = 1 / 0.6745
MAX_SIGMA = 75.0  # on the 0-255 scale; estimates or hints above are clamped


def estimate_sigma(plane: np.ndarray) -> float:
    """Noise standard deviation (0-255 scale) of a plane in [0, 1], from the finest Haar diagonal detail.

    Donoho's robust estimator: image content is sparse in the diagonal band, noise is not.
    """
    height, width = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    if height == 0 or width == 0:
        return 0.0
    x = plane[:height, :width].astype(np.float64)
    diagonal = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0
    return float(min(MAX_SIGMA, np.median(np.abs(diagonal)) * MAD_TO_SIGMA * 255.0))


@dataclass(frozen=True)
class Tiling:
    """Square tiles of `size` pixels whose centres (all but `overlap` on each side) cover the plane."""

    size: int = 256
    overlap: int = 24

    @property
    def step(self) -> int:
        return self.size - 2 * self.overlap

    def cut(self, plane: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(tiles (N, size, size), grid (rows, cols)) of a plane, reflect-padded at the borders."""
        height, width = plane.shape
        rows, cols = -(-height // self.step), -(-width // self.step)
        padded = np.pad(
            plane,
            ((self.overlap, rows * self.step - height + self.overlap), (self.overlap, cols * self.step - width + self.overlap)),
            mode="reflect" if min(height, width) > self.overlap else "edge",
        )
        tiles = [padded[r * self.step : r * self.step + self.size, c * self.step : c * self.step + self.size]
                 for r in range(rows) for c in range(cols)]
        return np.stack(tiles), (rows, cols)

    def stitch(self, tiles: np.ndarray, grid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """Inverse of cut: keep each tile's centre, drop the overlaps."""
        rows, cols = grid
        inner = tiles[:, self.overlap : self.size - self.overlap, self.overlap : self.size - self.overlap]
        plane = inner.reshape(rows, cols, self.step, self.step).transpose(0, 2, 1, 3).reshape(rows * self.step, cols * self.step)
        return plane[: shape[0], : shape[1]]


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise (sigma on the 0-255 scale), clipped and quantised like a saved 8-bit image."""
    noisy = clean + rng.normal(0.0, sigma / 255.0, clean.shape)
    return np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def tiling_for(shape: tuple[int, int], max_tile: int = 512, overlap: int = 24) -> Tiling:
    """As few square tiles of at most max_tile pixels as cover the plane, each just big enough (a multiple of 8).

    The network's work is the tiles' total area: a 512x512 plane takes four 304-pixel tiles (0.37 Mpx of work), not
    four 512-pixel ones (1.05 Mpx); small planes take one tile.
    """
    longest_step = max_tile - 2 * overlap
    rows, cols = (-(-side // longest_step) for side in shape)
    step = max(-(-shape[0] // rows), -(-shape[1] // cols))
    size = -(-(step + 2 * overlap) // 8) * 8  # a multiple of 8: even for pixel-unshuffle, friendly to kernels
    return Tiling(size=size, overlap=overlap)


def calibrated(estimate: float, calibration: dict | None) -> float:
    """A blind estimate corrected by the model's calibration (metadata): at high noise the estimate reads low,
    because clipping to the 0-255 range removes part of the noise; below `above` it is left as it is."""
    if not calibration or estimate <= calibration["above"]:
        return estimate
    return float(np.interp(estimate, calibration["estimates"], calibration["sigmas"]))


def to_tiles(plane: np.ndarray, sigma: float | None, max_tile: int = 512,
             calibration: dict | None = None) -> tuple[dict[str, np.ndarray], Tiling, tuple[int, int]]:
    """Network inputs for one plane: {"noisy": (N, 1, S, S) float32, "sigma": (N, 1) float32}, and how to undo the tiling.

    `sigma` (0-255 scale) is the caller's hint; None estimates it from the plane (corrected by `calibration`).
    """
    level = calibrated(estimate_sigma(plane), calibration) if sigma is None else float(np.clip(sigma, 0.0, MAX_SIGMA))
    tiling = tiling_for(plane.shape, max_tile)
    tiles, grid = tiling.cut(plane.astype(np.float32))
    feeds = {"noisy": tiles[:, None], "sigma": np.full((len(tiles), 1), level, dtype=np.float32)}
    return feeds, tiling, grid


def from_tiles(output: np.ndarray, tiling: Tiling, grid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """(N, 1, S', S') network output (S' >= S when batched with larger tiles) -> the denoised (H, W) plane."""
    return tiling.stitch(output[:, 0, : tiling.size, : tiling.size], grid, shape)


# Self-ensemble: the network is not exactly symmetric, so the mean of its outputs on flipped copies of the input
# (each flipped back) has less error than one pass. Each orientation is its own inverse on square tiles.
ORIENTATIONS = {
    "identity": lambda tiles: tiles,
    "flip_lr": lambda tiles: tiles[..., ::-1],
    "flip_ud": lambda tiles: tiles[..., ::-1, :],
    "rot180": lambda tiles: tiles[..., ::-1, ::-1],
}
ORIENTATION_WORDS = {"identity": "as given", "flip_lr": "flipped left-right", "flip_ud": "flipped up-down",
                     "rot180": "turned 180 degrees"}
SINGLE_PASS = ("identity",)


def oriented(tiles: np.ndarray, orientations: tuple[str, ...]) -> np.ndarray:
    """One batch of the tiles in every orientation, orientation by orientation."""
    return np.concatenate([np.ascontiguousarray(ORIENTATIONS[name](tiles)) for name in orientations])


def turned_back(outputs: np.ndarray, tiles: np.ndarray, orientations: tuple[str, ...]) -> list[np.ndarray]:
    """Each orientation's outputs for `tiles`, turned back. Outputs batched with larger tiles come zero-padded at
    the bottom and right, so they are cut to the tiles' own size before flipping."""
    size = tiles.shape[-2:]
    parts = np.split(outputs[..., : size[0], : size[1]], len(orientations))
    return [ORIENTATIONS[name](part) for name, part in zip(orientations, parts)]


def self_ensemble(outputs: np.ndarray, tiles: np.ndarray, orientations: tuple[str, ...]) -> np.ndarray:
    """The mean over orientations of the network's outputs for `oriented(tiles, orientations)`."""
    return np.mean(turned_back(outputs, tiles, orientations), axis=0, dtype=np.float32)
