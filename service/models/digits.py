"""Digits: handwritten digit classification (a CNN trained on MNIST), with a not-a-digit score.

Internal batch: (N, 1, 28, 28) float32 digits in MNIST layout. Wire forms: one photo or scan (multipart, raw
body, v2 `image`), arrays already in MNIST layout (JSON, a .npy body, v2 `pixels`).
"""

from __future__ import annotations

import asyncio
import functools
import io
import tokenize
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from modelcore import digits
from modelcore.errors import InputError
from modelcore.images import decode_grey, open_image, restated, to_grey
from service.models.contract import (
    Binary,
    Endpoint,
    JsonBody,
    Multipart,
    Prediction,
    QueryParameter,
    RawBody,
    ServedModel,
    TensorSig,
    Upload,
    only_one_of,
)
from service.models.explain import (
    RISE_CELLS,
    RISE_KEEP,
    RISE_MASKS,
    overlay_png,
    rise_attribution,
    rise_masks,
)
from service.models.schemas import ModelRef
from service.operations.metrics import count_explanation
from service.operations.settings import ModelSettings, get_settings

NAME = "digits"
MAX_ITEMS = get_settings().max_items_per_request  # request-schema limits are part of the schemas below
# Small uploads (a scanned digit is a few kB) decode faster inline than through a thread hop.
INLINE_DECODE_BYTES = 64 * 1024
NPY_SEND_INSTEAD = (
    "send a .npy file (numpy.save) of shape (N, 28, 28), N from 1 to {limit}, dtype uint8 or float, values 0-255, "
    "white digits on black"
)
V2_PIXELS_INSTEAD = "send the input pixels as FP32 or UINT8 of shape [N, 28, 28], N from 1 to {limit}, values 0-255"


class DigitsSettings(ModelSettings):
    max_image_pixels: int = Field(
        4096 * 4096, ge=1, description="largest digit upload (width x height); larger gets 413 before decoding"
    )


Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
Row = Annotated[list[Pixel], Field(min_length=digits.SIDE, max_length=digits.SIDE)]
DigitArray = Annotated[list[Row], Field(min_length=digits.SIDE, max_length=digits.SIDE)]


class DigitArrays(BaseModel):
    images: Annotated[list[DigitArray], Field(min_length=1, max_length=MAX_ITEMS, description=(
        "digits already in MNIST layout: 28x28 arrays, white on black, values 0-255"))]


class DigitPrediction(BaseModel):
    label: int = Field(ge=0, le=9, description="the most probable digit")
    probabilities: list[float] = Field(description="probability of each digit 0-9, in that order")
    in_distribution: bool = Field(description="false when the image does not look like the digits the model learned "
                                              "from (a letter, a photo, noise...): do not trust the label then")
    ood_score: float = Field(ge=0, le=1, description="out-of-distribution score: higher = less like a handwritten digit")


class DigitResponse(DigitPrediction):
    model: ModelRef


class DigitArraysResponse(BaseModel):
    results: list[DigitPrediction] = Field(description="one prediction per input array, in input order")
    model: ModelRef


class DigitExplanation(DigitResponse):
    heatmap: list[list[float]] = Field(description="attribution toward the predicted label over the upload, rows of "
                                                   "pixels (higher = supports it; 0 outside the digit's box)")
    heatmap_scale: float = Field(description="heat-map pixels per upload pixel: 1, or less for uploads over 256 px a side")
    method: str = Field(description="how the map was computed")


@dataclass
class DigitPredictions(Prediction):
    """The graph's outputs for N digits; label and in_distribution derived once for every protocol."""

    probabilities: np.ndarray  # (N, 10) float32
    ood_score: np.ndarray  # (N,) float32
    threshold: float

    @functools.cached_property
    def label(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1).astype(np.int64)

    @functools.cached_property
    def in_distribution(self) -> np.ndarray:
        return self.ood_score <= self.threshold

    def rows(self) -> list[dict]:
        return [{"label": int(label), "probabilities": row.tolist(), "in_distribution": bool(inside),
                 "ood_score": float(score)}
                for label, row, inside, score in zip(self.label, self.probabilities, self.in_distribution, self.ood_score)]

    def tensors(self) -> dict[str, np.ndarray]:
        return {"probabilities": self.probabilities, "label": self.label, "ood_score": self.ood_score,
                "in_distribution": self.in_distribution}


class Digits(ServedModel):
    name = NAME
    task = "image-classification"
    settings_class = DigitsSettings
    inputs = (TensorSig("image", ("BYTES",), (-1,), optional=True, binary=True),
              TensorSig("pixels", ("FP32", "UINT8"), (-1, digits.SIDE, digits.SIDE), optional=True))
    outputs = (TensorSig("probabilities", ("FP32",), (-1, len(digits.LABELS))), TensorSig("label", ("INT64",), (-1,)),
               TensorSig("ood_score", ("FP32",), (-1,)), TensorSig("in_distribution", ("BOOL",), (-1,)))
    max_batch_size = MAX_ITEMS
    endpoints = (
        Endpoint("/digits/classify", "classify_upload", Multipart(files=("image",)), DigitResponse),
        Endpoint("/digits/classify-image", "classify_upload", RawBody("image", ("image/png", "image/jpeg",
                 "application/octet-stream")), DigitResponse,
                 summary="Classify one digit image sent as the request body (PNG or JPEG)"),
        Endpoint("/digits/classify-arrays", "classify_arrays", JsonBody(DigitArrays), DigitArraysResponse),
        Endpoint("/digits/classify-tensor", "classify_npy", RawBody("array", ("application/x-npy",
                 "application/octet-stream")), DigitArraysResponse),
        Endpoint("/digits/explain", "explain_upload", Multipart(files=("image",)), DigitExplanation,
                 answer_types=("application/json", "image/png"),
                 query=(QueryParameter("format", "png: the upload with the heat map overlaid, instead of JSON",
                                       ("json", "png")),)),
    )

    def flagged(self, answer: Any) -> int:
        """Items answered "not a digit" (in_distribution false), in a friendly answer or v2 tensors (0 for an image)."""
        if not isinstance(answer, dict):
            return 0
        if "in_distribution" in answer:
            inside = answer["in_distribution"]
            return int((~np.asarray(inside)).sum()) if isinstance(inside, np.ndarray) else int(not inside)
        return sum(not result.get("in_distribution", True) for result in answer.get("results", ()))

    # decode: every wire form -> (N, 1, 28, 28) float32 in MNIST layout -------------------------------------

    async def pixels_of_file(self, upload: Upload) -> np.ndarray:
        """A photo or scan -> (1, 1, 28, 28); off the event loop for large files."""
        if len(upload.data) <= INLINE_DECODE_BYTES:
            return restated(self.laid_out_file, upload.data, where=upload.where)
        return await asyncio.to_thread(restated, self.laid_out_file, upload.data, where=upload.where)

    def laid_out_file(self, data: bytes) -> np.ndarray:
        return digits.to_mnist_layout(decode_grey(data, self.settings.max_image_pixels))[None, None]

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """v2: `image` (encoded PNG/JPEG files, /digits/classify's preprocessing) or `pixels` (MNIST layout)."""
        if only_one_of(tensors, ("image", "pixels")) == "pixels":
            return checked_pixels(tensors["pixels"], V2_PIXELS_INSTEAD)
        files = tensors["image"].ravel()
        if not 1 <= len(files) <= MAX_ITEMS:
            raise InputError(f"Send 1 to {MAX_ITEMS} images per request, not {len(files)}.")
        return np.concatenate([await self.pixels_of_file(Upload(data, f"as element {index} of the BYTES input 'image'"))
                               for index, data in enumerate(files)])

    # predict --------------------------------------------------------------------------------------------------

    async def predict(self, pixels: np.ndarray) -> DigitPredictions:
        outputs = await self.session.predict_outputs(self.session.feeds(pixels))
        return DigitPredictions(outputs["probabilities"], outputs["ood_score"],
                                self.metadata.preprocessing["ood_threshold"])

    # the friendly endpoints: decode -> predict -> encode ------------------------------------------------------

    async def classify_upload(self, image: Upload) -> dict:
        """Classify one photo or scan of a handwritten digit (multipart field `image`: PNG or JPEG, any size,
        colour or grey, dark-on-light or light-on-dark)."""
        (row,) = (await self.predict(await self.pixels_of_file(image))).rows()
        return {**row, "model": self.reference()}

    async def classify_arrays(self, images: list) -> dict:
        """Classify digits already in MNIST layout: a list of 28x28 arrays, white on black, values 0-255."""
        prediction = await self.predict(np.asarray(images, dtype=np.float32)[:, None])
        return {"results": prediction.rows(), "model": self.reference()}

    async def classify_npy(self, array: Upload) -> dict:
        """Classify a .npy array (numpy.save) of shape (N, 28, 28) in MNIST layout, values 0-255: the binary twin
        of /digits/classify-arrays for client-side batches."""
        prediction = await self.predict(npy_to_pixels(array.data))
        return {"results": prediction.rows(), "model": self.reference()}

    async def explain_upload(self, image: Upload, format: str = "json") -> dict | Binary:
        """Classify one digit image like /digits/classify and say why: a heat map over the upload of what supported
        the predicted label (RISE: 128 random masks through the model). `?format=png` answers the upload with the
        map overlaid in red instead of JSON."""
        as_png = format == "png"
        explained = await self.explain(image.data, full_size=as_png)
        count_explanation(NAME)
        if as_png:
            png = await asyncio.to_thread(overlay_png, explained.pop("upload"), explained.pop("heat"))
            return Binary(png, "image/png", {"X-Model-Name": NAME, "X-Model-Version": self.version,
                                             "X-Digit-Label": str(explained["label"])})
        return {**explained, "model": self.reference()}

    # explanations ---------------------------------------------------------------------------------------------

    async def explain(self, data: bytes, full_size: bool = False) -> dict:
        """The prediction, and its heat map over the upload (downscaled past EXPLAIN_MAX_SIDE unless `full_size`)."""
        frame, layout, image = await asyncio.to_thread(self.laid_out_upload, data)
        masks = rise_masks(digits.SIDE)
        batch = np.concatenate([frame[None], masks * frame[None]])[:, None]  # (1 + masks, 1, 28, 28)
        prediction = await self.predict(batch)
        (row,) = DigitPredictions(prediction.probabilities[:1], prediction.ood_score[:1], prediction.threshold).rows()
        # Only ink can be erased: pixels the model sees as (nearly) blank get no attribution (masks spread it to them).
        heat = rise_attribution(masks, prediction.probabilities[1:, row["label"]]) * (frame > INK_LEVEL)
        upload_map, scale = layout.to_upload(heat, max_side=None if full_size else EXPLAIN_MAX_SIDE)
        if full_size:
            return {**row, "heat": upload_map, "upload": image}
        return {**row, "heatmap": np.round(upload_map, 5).tolist(), "heatmap_scale": scale, "method": RISE_METHOD}

    def laid_out_upload(self, data: bytes) -> tuple[np.ndarray, digits.Layout, Image.Image]:
        """(the 28x28 frame, how it maps back onto the upload, the decoded upload)."""
        image = open_image(data, self.settings.max_image_pixels)
        frame, layout = digits.laid_out(to_grey(image))
        return frame, layout, image


EXPLAIN_MAX_SIDE = 256
INK_LEVEL = 25.0  # of 255: below it a frame pixel is resampling ringing around the strokes, not ink
RISE_METHOD = (f"RISE: {RISE_MASKS} random masks ({RISE_CELLS}x{RISE_CELLS} cells, {RISE_KEEP:.0%} kept) over the "
               "model's 28x28 input; attribution = mean probability of the predicted digit when a pixel is kept minus "
               "when it is removed; mapped back onto the upload through the preprocessing's crop and scale")


def digits_shape(shape: tuple[int, ...], instead: str) -> tuple[int, ...]:
    """(N, 28, 28) from an (N, 28, 28) or (N, 1, 28, 28) shape with 1 <= N <= the item limit, else InputError."""
    squeezed = shape[:1] + shape[2:] if len(shape) == 4 and shape[1] == 1 else tuple(shape)
    if len(squeezed) != 3 or squeezed[1:] != (digits.SIDE, digits.SIDE) or not 1 <= squeezed[0] <= MAX_ITEMS:
        raise InputError(f"The array has shape {tuple(shape)}; {instead.format(limit=MAX_ITEMS)}.")
    return squeezed


def checked_pixels(array: np.ndarray, instead: str) -> np.ndarray:
    """Digits in MNIST layout, values 0-255 -> (N, 1, 28, 28) float32, or InputError saying what to send."""
    pixels = array.reshape(digits_shape(array.shape, instead)).astype(np.float32, copy=False)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise InputError(f"Values must be finite and within 0-255; {instead.format(limit=MAX_ITEMS)}.")
    return pixels[:, None]


def npy_to_pixels(data: bytes) -> np.ndarray:
    """A .npy upload of N digits in MNIST layout -> (N, 1, 28, 28) float32, or InputError.

    The header's shape and dtype are checked before any data is read, so a small file declaring a huge
    array allocates nothing; np.load(allow_pickle=False) refuses object arrays (pickles).
    """
    instead = NPY_SEND_INSTEAD.format(limit=MAX_ITEMS)
    stream = io.BytesIO(data)
    try:
        shape, dtype = _npy_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # numpy parses the header as Python literals
        raise InputError(f"The body is not a readable .npy array ({exc}); {instead}.") from None
    if dtype.kind not in "uif":
        raise InputError(f"The array's dtype is {dtype}: it must be an integer or float type; {instead}.")
    digits_shape(shape, NPY_SEND_INSTEAD)  # before reading any data
    stream.seek(0)
    try:
        array = np.load(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"The .npy data is truncated or corrupt ({exc}); {instead}.") from None
    return checked_pixels(array, NPY_SEND_INSTEAD)


def _npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header (format versions 1 and 2), without reading the data."""
    major, _ = np.lib.format.read_magic(stream)
    if major == 1:
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif major == 2:
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f".npy format version {major} (save with numpy.save's default)")
    return shape, dtype
