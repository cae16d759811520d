"""Denoise endpoint: Gaussian-noise removal for greyscale and colour images of any size."""

import asyncio
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from pydantic import Field
from starlette.responses import Response

from modelcore.denoise import MAX_SIGMA, from_tiles, to_tiles
from modelcore.images import Planes, encode_png, merge_planes, open_image, split_planes
from service.http import answers_client_errors
from service.runtime import OnnxModel
from service.settings import get_settings

NAME = "denoise"
settings = get_settings()


def upload_to_feeds(image: Path, sigma: float | None):
    """Decode, split into planes, tile every plane: (feeds for all tiles, planes, tiling, grid)."""
    planes = split_planes(open_image(image.read_bytes(), settings.max_denoise_pixels))
    shape = planes.planes[0].shape
    tiled = [to_tiles(plane, sigma) for plane in planes.planes]
    feeds = {name: np.concatenate([part[0][name] for part in tiled]) for name in ("noisy", "sigma")}
    _, tiling, grid = tiled[0]
    return feeds, planes, tiling, grid, shape


def feeds_to_png(output: np.ndarray, planes: Planes, tiling, grid, shape) -> bytes:
    """Stitch each plane's tiles back and encode the image as PNG, same size and mode family."""
    per_plane = np.split(output, len(planes.planes))
    planes.planes = [from_tiles(tiles, tiling, grid, shape) for tiles in per_plane]
    return encode_png(merge_planes(planes))


class DenoiseAPI:
    """Mixed into the ModelServer: the /denoise endpoint."""

    denoise_model = bentoml.models.BentoModel(settings.model_tag(NAME))
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
        denoised channel by channel."""
        feeds, planes, tiling, grid, shape = await asyncio.to_thread(upload_to_feeds, image, sigma)
        output = await self.models[NAME].predict(feeds)
        png = await asyncio.to_thread(feeds_to_png, output, planes, tiling, grid, shape)
        levels = feeds["sigma"][:: len(feeds["sigma"]) // len(planes.planes), 0]  # one per plane
        headers = {
            "X-Model-Name": NAME,
            "X-Model-Version": self.models[NAME].version,
            "X-Noise-Sigma": ",".join(f"{level:.2f}" for level in levels),  # the level used per channel
        }
        return Response(png, media_type="image/png", headers=headers)
