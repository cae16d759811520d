"""Denoise: Gaussian-noise removal for greyscale and colour images of any size - endpoint and registry entry."""

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from starlette.responses import Response

from modelcore.denoise import (
    MAX_SIGMA,
    ORIENTATION_WORDS,
    ORIENTATIONS,
    SINGLE_PASS,
    Tiling,
    add_noise,
    from_tiles,
    oriented,
    psnr,
    self_ensemble,
    to_tiles,
    turned_back,
)
from modelcore.errors import InputError
from modelcore.images import Planes, encode_png, merge_planes, open_image, png_bytes, restated, split_planes
from service.explain import count_explanation
from service.http import answers_client_errors
from service.registry import (
    DryRun,
    HttpAnswer,
    HttpRequest,
    LoadProfile,
    ModelEntry,
    Smoke,
    TensorSig,
    V2Signature,
    Workload,
)
from service.runtime import OnnxModel
from service.schemas import ModelRef
from service.settings import get_settings

NAME = "denoise"


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


def tiled_upload(data: bytes, sigma: float | None, calibration: dict | None = None) -> Tiled:
    """Decode, split into planes, tile every plane (each plane's noise level estimated unless `sigma` is given,
    and corrected by the model's `calibration`)."""
    planes = split_planes(open_image(data, get_settings().max_denoise_pixels))
    shape = planes.planes[0].shape
    cut = [to_tiles(plane, sigma, calibration=calibration) for plane in planes.planes]
    feeds = {name: np.concatenate([part[0][name] for part in cut]) for name in ("noisy", "sigma")}
    _, tiling, grid = cut[0]
    return Tiled(feeds["noisy"], feeds["sigma"], planes, tiling, grid, shape)


def stitched_png(output: np.ndarray, tiled: Tiled) -> bytes:
    """Stitch each plane's tiles back and encode the image as PNG, same size and mode family."""
    per_plane = np.split(output, len(tiled.planes.planes))
    rebuilt = Planes([from_tiles(tiles, tiled.tiling, tiled.grid, tiled.shape) for tiles in per_plane],
                     tiled.planes.alpha, tiled.planes.mode)
    return encode_png(merge_planes(rebuilt))


async def cut_upload(model: OnnxModel, data: bytes, sigma: float | None, where: str) -> Tiled:
    """tiled_upload off the event loop, with the model's noise-level calibration; bad files restated as 4xx."""
    calibration = model.metadata.preprocessing.get("sigma_calibration")
    return await asyncio.to_thread(restated, lambda upload: tiled_upload(upload, sigma, calibration), data, where=where)


async def run_oriented(model: OnnxModel, tiled: Tiled, orientations: tuple[str, ...]) -> np.ndarray:
    """The network's outputs for every tile in every orientation, in one batched call."""
    tiles = oriented(tiled.tiles, orientations)
    return await model.predict(model.feeds(tiles, np.tile(tiled.levels, (len(orientations), 1))))


def served_orientations(model: OnnxModel) -> tuple[str, ...]:
    """The passes /denoise averages: the model's self-ensemble (its card's figures use it) unless turned off."""
    if not get_settings().denoise_self_ensemble:
        return SINGLE_PASS
    return tuple(model.metadata.preprocessing.get("self_ensemble", SINGLE_PASS))


async def denoised(model: OnnxModel, data: bytes, sigma: float | None, where: str) -> tuple[bytes, np.ndarray]:
    """(the cleaned image as PNG, the noise level used per channel) for one uploaded image file."""
    tiled = await cut_upload(model, data, sigma, where)
    orientations = served_orientations(model)
    output = self_ensemble(await run_oriented(model, tiled, orientations), tiled.tiles, orientations)
    return await asyncio.to_thread(stitched_png, output, tiled), tiled.levels_per_plane


def trained_range(model: OnnxModel) -> tuple[float, float]:
    """The noise levels (0-255 scale) the model saw in training, from its metadata."""
    return 0.0, float(model.metadata.training.get("max_sigma", MAX_SIGMA))


def in_trained_range(model: OnnxModel, levels: np.ndarray) -> bool:
    low, high = trained_range(model)
    return bool(((levels >= low) & (levels <= high)).all())


# Explanations: what was removed, and where to doubt it -------------------------------------------

# Square tiles go through the network in all four orientations; each output is turned back. Where the four
# disagree the result is uncertain (rank correlation with the actual error on 16x16 blocks of the test images:
# the denoise card).
EXPLAIN_ORIENTATIONS = tuple(ORIENTATIONS)
UNCERTAINTY_METHOD = (f"standard deviation over four passes ({', '.join(ORIENTATION_WORDS[name] for name in EXPLAIN_ORIENTATIONS)}), "
                      "per pixel")


def map_png(planes: list[np.ndarray], offset: float, gain: float) -> str:
    """Planes of values on the 0-255 scale as a base64 PNG: pixel = offset + gain x value, clipped to 0-255."""
    import base64

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


async def explain(model: OnnxModel, data: bytes, sigma: float | None) -> dict:
    tiled = await cut_upload(model, data, sigma, where="in the multipart field 'image'")
    outputs = await run_oriented(model, tiled, EXPLAIN_ORIENTATIONS)
    maps = await asyncio.to_thread(explanation, tiled, outputs)
    levels = tiled.levels_per_plane
    return {**maps, "noise_sigma": [round(float(level), 2) for level in levels], "trained_sigma_range": list(trained_range(model)),
            "noise_level_in_range": in_trained_range(model, levels)}


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


class DenoiseAPI:
    """Mixed into the ModelServer: the /denoise endpoint."""

    denoise_model = bentoml.models.BentoModel(get_settings().model_tag(NAME))
    models: dict[str, OnnxModel]

    @bentoml.api(route="/denoise")
    @answers_client_errors(NAME)
    async def denoise(
        self,
        image: Path,
        sigma: Annotated[
            float | None,
            Field(ge=0, le=MAX_SIGMA, description="optional noise level hint (standard deviation, 0-255 scale); estimated when absent"),
        ] = None,
    ) -> Annotated[Path, bentoml.validators.ContentType("image/png")]:
        """Denoise one PNG or JPEG (multipart field `image`); answers the cleaned image as PNG, same size and mode
        (greyscale, RGB, alpha and 16-bit kept; palette and CMYK images come back as RGB). Colour images are
        denoised channel by channel; the result is the mean of the model's self-ensemble passes (the image as given
        and turned 180 degrees, for the shipped model; header X-Denoise-Passes)."""
        model = self.models[NAME]
        png, levels = await denoised(model, image.read_bytes(), sigma, where="in the multipart field 'image'")
        headers = {
            "X-Model-Name": NAME,
            "X-Model-Version": model.version,
            "X-Noise-Sigma": ",".join(f"{level:.2f}" for level in levels),  # the level used per channel
            "X-Noise-Level-In-Range": "true" if in_trained_range(model, levels) else "false",
            "X-Denoise-Passes": str(len(served_orientations(model))),  # self-ensemble passes averaged
        }
        return Response(png, media_type="image/png", headers=headers)

    @bentoml.api(route="/denoise/explain")
    @answers_client_errors(NAME)
    async def denoise_explain(
        self,
        image: Path,
        sigma: Annotated[float | None, Field(ge=0, le=MAX_SIGMA, description="optional noise level hint, as for /denoise")] = None,
    ) -> DenoiseExplanation:
        """What /denoise removes from this image (the noise map) and where to doubt it (the uncertainty map), as
        base64 PNGs with the scales that map them to 0-255, and whether the noise level is one the model was
        trained on. Costs four passes of the network."""
        model = self.models[NAME]
        explained = await explain(model, image.read_bytes(), sigma)
        count_explanation(NAME)
        return DenoiseExplanation(**explained, method=UNCERTAINTY_METHOD, model=model.reference())


# Open Inference Protocol v2 ----------------------------------------------------------------------


async def v2_infer(model: OnnxModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """v2: one encoded `image` (and an optional `sigma`, 0-255 scale) -> the cleaned `image` as PNG bytes."""
    if inputs["image"].size != 1:
        raise InputError("Send exactly one image (shape [1]) per denoise request.")
    sigma = None
    if "sigma" in inputs:
        values = inputs["sigma"].ravel()
        if values.size != 1 or not np.isfinite(values[0]) or not 0 <= values[0] <= MAX_SIGMA:
            raise InputError(f"sigma must be one number from 0 to {MAX_SIGMA:g} (noise standard deviation, 0-255 scale).")
        sigma = float(values[0])
    png, _ = await denoised(model, inputs["image"].ravel()[0], sigma, where="as the BYTES input 'image'")
    image = np.empty(1, dtype=object)
    image[0] = png
    return {"image": image}


# Registry entry ----------------------------------------------------------------------------------

SMOKE_SIZE = 96
LOAD_CROP = 128  # the load tests' noisy photograph crops (loadtest/payloads.py)


def smooth_image(size: int = SMOKE_SIZE) -> np.ndarray:
    """A smooth synthetic greyscale scene in [0, 1]: noise on it is easy to measure."""
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.25 + 0.5 * (0.5 * np.sin(3 * x) + 0.5 * np.cos(2 * y)) ** 2


def noisy_plane(size: int = SMOKE_SIZE, sigma: float = 25.0) -> np.ndarray:
    return add_noise(smooth_image(size), sigma, np.random.default_rng(0))


def noisy_png(size: int = SMOKE_SIZE) -> bytes:
    return png_bytes((noisy_plane(size) * 255).round().astype(np.uint8))


def smoke_request() -> HttpRequest:
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata({"image": ("noisy.png", noisy_png(), "image/png")})
    return HttpRequest("/denoise", body, content_type)


def cleaned(answer: HttpAnswer, size: int = SMOKE_SIZE) -> bool:
    """A PNG of the right size, much closer to the clean image than the noisy upload was."""
    from PIL import Image

    if answer.status != 200 or answer.headers.get("content-type") != "image/png":
        return False
    output = np.asarray(Image.open(io.BytesIO(answer.body)), dtype=np.float64) / 255
    clean = smooth_image(size)
    return output.shape == (size, size) and psnr(clean, output) > psnr(clean, noisy_plane(size)) + 6


def same_size_png(answer: HttpAnswer) -> str | None:
    """None when the answer is a PNG of the load test's crop size, else what is wrong."""
    width_height = answer.body[16:24] if answer.body[:8] == b"\x89PNG\r\n\x1a\n" else b""
    if answer.status != 200 or width_height != LOAD_CROP.to_bytes(4, "big") * 2:
        return f"unexpected answer {answer.status}: {answer.body[:200]!r}"
    return None


ENTRY = ModelEntry(
    name=NAME,
    api=DenoiseAPI,
    v2=V2Signature(
        inputs=(TensorSig("image", ("BYTES",), (1,), binary=True), TensorSig("sigma", ("FP32",), (1,), optional=True)),
        outputs=(TensorSig("image", ("BYTES",), (1,), binary=True),),
        infer=v2_infer,
    ),
    smoke=Smoke(smoke_request, cleaned),
    load=LoadProfile(
        workloads=(Workload("noisy-png", "/denoise", "loadtest.payloads:noisy_pngs",
                            noop_path="/diagnostics/noop-upload", check=same_size_png),),
        mixed_weight=1,
        compute_feeds="loadtest.payloads:denoise_feeds",
    ),
    dry_run=DryRun(training_args=("--depth", "4", "--width", "8"), export_options={"quick": True}),
)
