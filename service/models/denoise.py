"""Denoise: Gaussian-noise removal for greyscale and colour images of any size.

Internal batch: one upload cut into tiles (every plane's tiles, with a noise level per tile). Wire forms: a
multipart upload with an optional `sigma`, the v2 BYTES input `image` with an optional FP32 `sigma`.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from modelcore.denoise import (
    MAX_SIGMA,
    ORIENTATION_WORDS,
    ORIENTATIONS,
    SINGLE_PASS,
    Tiling,
    from_tiles,
    oriented,
    self_ensemble,
    to_tiles,
    turned_back,
)
from modelcore.errors import InputError
from modelcore.images import Planes, encode_png, merge_planes, open_image, restated, split_planes
from service.models.contract import (
    Binary,
    Comparison,
    Endpoint,
    Multipart,
    Prediction,
    ServedModel,
    TensorSig,
    Upload,
)
from service.models.schemas import ModelRef
from service.operations.metrics import count_explanation
from service.operations.settings import ModelSettings

NAME = "denoise"


class DenoiseSettings(ModelSettings):
    max_denoise_pixels: int = Field(
        2 * 2**20, ge=1, description="largest image /denoise accepts (width x height); larger gets 413"
    )
    denoise_self_ensemble: bool = Field(
        True, description="/denoise averages the flipped passes its model's metadata lists (preprocessing.self_ensemble; "
        "the shipped model: 2 passes, +0.05-0.08 dB); false: one pass, about half the compute"
    )


class DenoiseForm(BaseModel):
    """The form fields besides the file."""

    sigma: Annotated[float | None, Field(ge=0, le=MAX_SIGMA, description="optional noise level hint (standard "
                                         "deviation, 0-255 scale); estimated when absent")] = None


class MapScale(BaseModel):
    offset: float
    gain: float
    meaning: str


class DenoiseExplanation(BaseModel):
    noise: str = Field(description="what the model removed (input - output), a base64 PNG mapped by noise_scale")
    noise_scale: MapScale
    uncertainty: str = Field(description="per-pixel uncertainty, a base64 PNG mapped by uncertainty_scale")
    uncertainty_scale: MapScale
    noise_sigma: list[float] = Field(description="the noise level used per channel, 0-255 scale")
    trained_sigma_range: list[float] = Field(description="the noise levels the model was trained on")
    noise_level_in_range: bool = Field(description="false when a channel's noise level is outside the trained range: "
                                                   "the result is less trustworthy")
    method: str
    model: ModelRef


@dataclass
class Tiled:
    """An upload cut for the network: every plane's tiles as one batch, and how to put the image back."""

    tiles: np.ndarray  # (N, 1, S, S) float32 in [0, 1]
    levels: np.ndarray  # (N, 1) float32 noise level per tile, 0-255 scale
    planes: Planes
    tiling: Tiling
    grid: tuple[int, int]
    shape: tuple[int, int]

    @property
    def levels_per_plane(self) -> np.ndarray:
        return self.levels[:: len(self.levels) // len(self.planes.planes), 0]


@dataclass
class Denoised(Prediction):
    """The cleaned image as PNG, the noise level used per channel, and what the answer says about them."""

    png: bytes
    levels: np.ndarray
    passes: int
    in_range: bool

    def headers(self, version: str) -> dict[str, str]:
        return {
            "X-Model-Name": NAME,
            "X-Model-Version": version,
            "X-Noise-Sigma": ",".join(f"{level:.2f}" for level in self.levels),  # the level used per channel
            "X-Noise-Level-In-Range": "true" if self.in_range else "false",
            "X-Denoise-Passes": str(self.passes),  # self-ensemble passes averaged
        }

    def tensors(self) -> dict[str, np.ndarray]:
        image = np.empty(1, dtype=object)
        image[0] = self.png
        return {"image": image}


class Denoise(ServedModel):
    name = NAME
    task = "image-denoising"
    settings_class = DenoiseSettings
    inputs = (TensorSig("image", ("BYTES",), (1,), binary=True), TensorSig("sigma", ("FP32",), (1,), optional=True))
    outputs = (TensorSig("image", ("BYTES",), (1,), binary=True),)
    endpoints = (
        Endpoint("/denoise", "denoise_upload", Multipart(files=("image",), fields=DenoiseForm), None,
                 answer_types=("image/png",)),
        Endpoint("/denoise/explain", "explain_upload", Multipart(files=("image",), fields=DenoiseForm),
                 DenoiseExplanation),
    )

    def compare(self, answer: Any, other: Any) -> Comparison:
        """Two cleaned images: the mean absolute difference of their pixels (0-1 scale); no labels to agree on."""
        ours, theirs = (png_of(one) for one in (answer, other))
        if ours is None or theirs is None or ours.shape != theirs.shape:
            return Comparison(1, 0, 1.0)
        return Comparison(1, 0, float(np.abs(ours - theirs).mean()))

    # decode: an upload and its noise level -> tiles ----------------------------------------------------------

    async def tiled(self, upload: Upload, sigma: float | None) -> Tiled:
        """Decode, split into planes and tile every plane, off the event loop; bad files restated as 4xx."""
        return await asyncio.to_thread(restated, lambda data: self.cut(data, sigma), upload.data, where=upload.where)

    def cut(self, data: bytes, sigma: float | None) -> Tiled:
        """Every plane's tiles (each plane's noise level estimated unless `sigma` is given, and corrected by the
        model's calibration)."""
        calibration = self.metadata.preprocessing.get("sigma_calibration")
        planes = split_planes(open_image(data, self.settings.max_denoise_pixels))
        cut = [to_tiles(plane, sigma, calibration=calibration) for plane in planes.planes]
        feeds = {name: np.concatenate([part[0][name] for part in cut]) for name in ("noisy", "sigma")}
        _, tiling, grid = cut[0]
        return Tiled(feeds["noisy"], feeds["sigma"], planes, tiling, grid, planes.planes[0].shape)

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> Tiled:
        """v2: one encoded `image` (and an optional `sigma`, 0-255 scale)."""
        if tensors["image"].size != 1:
            raise InputError("Send exactly one image (shape [1]) per denoise request.")
        sigma = None
        if "sigma" in tensors:
            values = tensors["sigma"].ravel()
            if values.size != 1 or not np.isfinite(values[0]) or not 0 <= values[0] <= MAX_SIGMA:
                raise InputError(f"sigma must be one number from 0 to {MAX_SIGMA:g} (noise standard deviation, "
                                 "0-255 scale).")
            sigma = float(values[0])
        return await self.tiled(Upload(tensors["image"].ravel()[0], "as the BYTES input 'image'"), sigma)

    # predict --------------------------------------------------------------------------------------------------

    async def predict(self, tiled: Tiled) -> Denoised:
        orientations = self.served_orientations()
        output = self_ensemble(await self.run_oriented(tiled, orientations), tiled.tiles, orientations)
        png = await asyncio.to_thread(stitched_png, output, tiled)
        levels = tiled.levels_per_plane
        return Denoised(png, levels, len(orientations), self.in_trained_range(levels))

    async def run_oriented(self, tiled: Tiled, orientations: tuple[str, ...]) -> np.ndarray:
        """The network's outputs for every tile in every orientation, in one batched call."""
        tiles = oriented(tiled.tiles, orientations)
        return await self.session.predict(self.session.feeds(tiles, np.tile(tiled.levels, (len(orientations), 1))))

    def served_orientations(self) -> tuple[str, ...]:
        """The passes /denoise averages: the model's self-ensemble (its card's figures use it) unless turned off."""
        if not self.settings.denoise_self_ensemble:
            return SINGLE_PASS
        return tuple(self.metadata.preprocessing.get("self_ensemble", SINGLE_PASS))

    def trained_range(self) -> tuple[float, float]:
        """The noise levels (0-255 scale) the model saw in training, from its metadata."""
        return 0.0, float(self.metadata.training.get("max_sigma", MAX_SIGMA))

    def in_trained_range(self, levels: np.ndarray) -> bool:
        low, high = self.trained_range()
        return bool(((levels >= low) & (levels <= high)).all())

    # the friendly endpoints -----------------------------------------------------------------------------------

    async def denoise_upload(self, image: Upload, sigma: float | None = None) -> Binary:
        """Denoise one PNG or JPEG (multipart field `image`); answers the cleaned image as PNG, same size and mode
        (greyscale, RGB, alpha and 16-bit kept; palette and CMYK images come back as RGB). Colour images are
        denoised channel by channel; the result is the mean of the model's self-ensemble passes (the image as given
        and turned 180 degrees, for the shipped model; header X-Denoise-Passes)."""
        denoised = await self.predict(await self.tiled(image, sigma))
        return Binary(denoised.png, "image/png", denoised.headers(self.version))

    async def explain_upload(self, image: Upload, sigma: float | None = None) -> dict:
        """What /denoise removes from this image (the noise map) and where to doubt it (the uncertainty map), as
        base64 PNGs with the scales that map them to 0-255, and whether the noise level is one the model was
        trained on. Costs four passes of the network."""
        tiled = await self.tiled(image, sigma)
        outputs = await self.run_oriented(tiled, EXPLAIN_ORIENTATIONS)
        maps = await asyncio.to_thread(explanation, tiled, outputs)
        levels = tiled.levels_per_plane
        count_explanation(NAME)
        return {**maps, "noise_sigma": [round(float(level), 2) for level in levels],
                "trained_sigma_range": list(self.trained_range()), "noise_level_in_range": self.in_trained_range(levels),
                "method": UNCERTAINTY_METHOD, "model": self.reference()}


def png_of(answer: Any) -> np.ndarray | None:
    """The pixels (0-1) of a denoise answer: a Binary PNG, or v2 tensors holding one."""
    import io

    data = answer.content if isinstance(answer, Binary) else answer.get("image", [None])[0] if isinstance(answer, dict) else None
    if not isinstance(data, bytes):
        return None
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels.astype(np.float64) / (65535.0 if pixels.dtype == np.uint16 else 255.0)


def stitched_png(output: np.ndarray, tiled: Tiled) -> bytes:
    """Stitch each plane's tiles back and encode the image as PNG, same size and mode family."""
    per_plane = np.split(output, len(tiled.planes.planes))
    rebuilt = Planes([from_tiles(tiles, tiled.tiling, tiled.grid, tiled.shape) for tiles in per_plane],
                     tiled.planes.alpha, tiled.planes.mode)
    return encode_png(merge_planes(rebuilt))


# Explanations: what was removed, and where to doubt it ---------------------------------------------------------

# Square tiles go through the network in all four orientations; each output is turned back. Where the four
# disagree the result is uncertain (rank correlation with the actual error on 16x16 blocks of the test images:
# the denoise card).
EXPLAIN_ORIENTATIONS = tuple(ORIENTATIONS)
UNCERTAINTY_METHOD = (f"standard deviation over four passes ({', '.join(ORIENTATION_WORDS[name] for name in EXPLAIN_ORIENTATIONS)}), "
                      "per pixel")


def map_png(planes: list[np.ndarray], offset: float, gain: float) -> str:
    """Planes of values on the 0-255 scale as a base64 PNG: pixel = offset + gain x value, clipped to 0-255."""
    channels = [np.clip(offset + gain * plane, 0, 255).round().astype(np.uint8) for plane in planes]
    image = Image.fromarray(channels[0] if len(channels) == 1 else np.stack(channels, axis=-1))
    return base64.b64encode(encode_png(image)).decode()


def explanation(tiled: Tiled, outputs: np.ndarray) -> dict:
    """From the four passes' outputs (4 x N tiles): the noise removed and the uncertainty, as PNG maps with their scales."""
    passes = turned_back(outputs, tiled.tiles, EXPLAIN_ORIENTATIONS)
    mean, spread = np.mean(passes, axis=0), np.std(passes, axis=0)
    per_plane = len(tiled.planes.planes)

    def planes_of(tiles: np.ndarray) -> list[np.ndarray]:
        return [from_tiles(part, tiled.tiling, tiled.grid, tiled.shape) * 255.0 for part in np.split(tiles, per_plane)]

    removed = [noisy - clean for noisy, clean in zip(planes_of(tiled.tiles), planes_of(mean))]
    doubt = planes_of(spread)
    noise_gain = 127.0 / max(3.0 * float(tiled.levels.max()), 1.0)  # +-3 sigma spans the PNG's range
    doubt_gain = 255.0 / max(float(max(plane.max() for plane in doubt)), 1e-3)
    return {
        "noise": map_png(removed, 128.0, noise_gain),
        "noise_scale": {"offset": 128.0, "gain": noise_gain,
                        "meaning": "pixel = 128 + gain x (input - output), both on the 0-255 scale"},
        "uncertainty": map_png(doubt, 0.0, doubt_gain),
        "uncertainty_scale": {"offset": 0.0, "gain": doubt_gain, "meaning": f"pixel = gain x {UNCERTAINTY_METHOD}, "
                              "0-255 scale"},
    }
