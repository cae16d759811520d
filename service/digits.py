"""Digits endpoints: handwritten digit classification (a CNN trained on MNIST)."""

import asyncio
import io
import tokenize
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelcore import digits
from modelcore.errors import InputError
from modelcore.images import decode_grey
from service.http import answers_client_errors
from service.openapi import Operation, model_schema
from service.runtime import OnnxModel
from service.schemas import ModelRef
from service.settings import get_settings

NAME = "digits"
settings = get_settings()

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
Row = Annotated[list[Pixel], Field(min_length=digits.SIDE, max_length=digits.SIDE)]
DigitArray = Annotated[list[Row], Field(min_length=digits.SIDE, max_length=digits.SIDE)]


class DigitPrediction(BaseModel):
    label: int = Field(ge=0, le=9, description="the most probable digit")
    probabilities: list[float] = Field(description="probability of each digit 0-9, in that order")


class DigitResponse(DigitPrediction):
    model: ModelRef


class DigitArraysResponse(BaseModel):
    results: list[DigitPrediction] = Field(description="one prediction per input array, in input order")
    model: ModelRef


def predictions(probabilities: np.ndarray) -> list[dict]:
    """(N, 10) probabilities -> one {label, probabilities} per row."""
    return [{"label": int(row.argmax()), "probabilities": row.tolist()} for row in probabilities]


# Small uploads (a scanned digit is a few kB) decode faster inline than through a thread hop.
INLINE_DECODE_BYTES = 64 * 1024


def upload_to_pixels(image: Path) -> np.ndarray:
    """An uploaded photo or scan -> (1, 1, 28, 28) float32 in MNIST layout."""
    return bytes_to_pixels(image.read_bytes())


def bytes_to_pixels(data: bytes) -> np.ndarray:
    grey = decode_grey(data, settings.max_image_pixels)
    return digits.to_mnist_layout(grey)[None, None]


def body_to_pixels(data: bytes) -> np.ndarray:
    """bytes_to_pixels for a raw-body upload: its errors say to send the file as the body."""
    try:
        return bytes_to_pixels(data)
    except InputError as exc:
        raise InputError(exc.message.replace("in the multipart field 'image'", "as the request body"), exc.status) from None


@answers_client_errors(NAME)
async def classify_image_body(request: Request) -> Response:
    """POST /digits/classify-image: the image file itself as the request body (no multipart, no JSON).

    The fast path for one image per request: the bytes go straight to the decoder, with no form parsing
    or temporary file. Same answer and errors as /digits/classify.
    """
    data = await request.body()
    pixels = body_to_pixels(data) if len(data) <= INLINE_DECODE_BYTES else await asyncio.to_thread(body_to_pixels, data)
    model = bentoml.get_current_service().models[NAME]
    (prediction,) = predictions(await model.predict({"pixels": pixels}))
    return JSONResponse({**prediction, "model": model.reference()})


class DigitsAPI:
    """Mixed into the ModelServer: the /digits/* endpoints."""

    digits_model = bentoml.models.BentoModel(settings.model_tag(NAME))
    models: dict[str, OnnxModel]

    @bentoml.api(route="/digits/classify")
    @answers_client_errors(NAME)
    async def digits_classify(self, image: Path) -> DigitResponse:
        """Classify one photo or scan of a handwritten digit (multipart field `image`: PNG or JPEG,
        any size, colour or grey, dark-on-light or light-on-dark)."""
        pixels = await asyncio.to_thread(upload_to_pixels, image)
        model = self.models[NAME]
        (prediction,) = predictions(await model.predict({"pixels": pixels}))
        return DigitResponse(**prediction, model=model.reference())

    @bentoml.api(route="/digits/classify-arrays")
    @answers_client_errors(NAME)
    async def digits_classify_arrays(
        self,
        images: Annotated[list[DigitArray], Field(min_length=1, max_length=settings.max_items_per_request)],
    ) -> DigitArraysResponse:
        """Classify digits already in MNIST layout: a list of 28x28 arrays, white on black, values 0-255."""
        pixels = np.asarray(images, dtype=np.float32)[:, None]  # (N, 1, 28, 28)
        model = self.models[NAME]
        return DigitArraysResponse(results=predictions(await model.predict({"pixels": pixels})), model=model.reference())


NPY_SEND_INSTEAD = (
    "send a .npy file (numpy.save) of shape (N, 28, 28), N from 1 to {limit}, dtype uint8 or float, values 0-255, "
    "white digits on black"
)


def npy_to_pixels(data: bytes) -> np.ndarray:
    """A .npy upload of N digits in MNIST layout -> (N, 1, 28, 28) float32, or InputError.

    The header's shape and dtype are checked before any data is read, so a small file declaring a huge
    array allocates nothing; np.load(allow_pickle=False) refuses object arrays (pickles).
    """
    instead = NPY_SEND_INSTEAD.format(limit=settings.max_items_per_request)
    stream = io.BytesIO(data)
    try:
        shape, dtype = _npy_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # numpy parses the header as Python literals
        raise InputError(f"The body is not a readable .npy array ({exc}); {instead}.") from None
    if dtype.kind not in "uif":
        raise InputError(f"The array's dtype is {dtype}: it must be an integer or float type; {instead}.")
    digits_shape = shape[:1] + shape[2:] if len(shape) == 4 and shape[1] == 1 else shape
    if len(digits_shape) != 3 or digits_shape[1:] != (digits.SIDE, digits.SIDE) or not 1 <= digits_shape[0] <= settings.max_items_per_request:
        raise InputError(f"The array has shape {shape}; {instead}.")
    stream.seek(0)
    try:
        array = np.load(stream, allow_pickle=False).reshape(digits_shape)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"The .npy data is truncated or corrupt ({exc}); {instead}.") from None
    pixels = array.astype(np.float32, copy=False)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise InputError(f"Values must be finite and within 0-255; {instead}.")
    return pixels[:, None]


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


@answers_client_errors(NAME)
async def classify_npy_body(request: Request) -> Response:
    """POST /digits/classify-tensor: a .npy array of N digits in MNIST layout as the body.

    The binary twin of /digits/classify-arrays for client-side batches: the same answer, without
    parsing and validating 784 JSON numbers per digit.
    """
    pixels = npy_to_pixels(await request.body())
    model = bentoml.get_current_service().models[NAME]
    return JSONResponse({"results": predictions(await model.predict({"pixels": pixels})), "model": model.reference()})


def documented_routes() -> list[Operation]:
    """The OpenAPI operations of the plain /digits routes (BentoML documents the others)."""
    one, one_refs = model_schema(DigitResponse)
    many, many_refs = model_schema(DigitArraysResponse)
    return [
        Operation("post", "/digits/classify-image", "Classify one digit image sent as the request body (PNG or JPEG)",
                  answer=one, schemas=one_refs, body_types=("image/png", "image/jpeg", "application/octet-stream")),
        Operation("post", "/digits/classify-tensor",
                  "Classify a .npy array (numpy.save) of shape (N, 28, 28) in MNIST layout, values 0-255",
                  answer=many, schemas=many_refs, body_types=("application/x-npy", "application/octet-stream")),
    ]
