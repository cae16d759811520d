"""Digits: handwritten digit classification (a CNN trained on MNIST) - endpoints and registry entry."""

import asyncio
import io
import json
import tokenize
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelcore import digits
from modelcore.errors import InputError
from modelcore.images import decode_grey, open_image, png_bytes, restated, to_grey
from service.explain import (
    RISE_CELLS,
    RISE_KEEP,
    RISE_MASKS,
    count_explanation,
    overlay_png,
    rise_attribution,
    rise_masks,
)
from service.http import answers_client_errors
from service.openapi import Operation, model_schema
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

NAME = "digits"
settings = get_settings()  # request-schema limits are part of the class definitions below

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
Row = Annotated[list[Pixel], Field(min_length=digits.SIDE, max_length=digits.SIDE)]
DigitArray = Annotated[list[Row], Field(min_length=digits.SIDE, max_length=digits.SIDE)]
# Small uploads (a scanned digit is a few kB) decode faster inline than through a thread hop.
INLINE_DECODE_BYTES = 64 * 1024


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


def predictions(outputs: dict[str, np.ndarray], threshold: float) -> list[dict]:
    """The graph's outputs for N digits -> one {label, probabilities, in_distribution, ood_score} per digit."""
    return [{"label": int(row.argmax()), "probabilities": row.tolist(), "in_distribution": bool(score <= threshold),
             "ood_score": float(score)} for row, score in zip(outputs["probabilities"], outputs["ood_score"])]


async def predicted(model: OnnxModel, pixels: np.ndarray) -> list[dict]:
    """Predictions for (N, 1, 28, 28) digits in MNIST layout, batched with concurrent requests."""
    return predictions(await model.predict_outputs(model.feeds(pixels)), model.metadata.preprocessing["ood_threshold"])


def bytes_to_pixels(data: bytes) -> np.ndarray:
    """An uploaded photo or scan -> (1, 1, 28, 28) float32 in MNIST layout."""
    grey = decode_grey(data, get_settings().max_image_pixels)
    return digits.to_mnist_layout(grey)[None, None]


async def decoded(data: bytes, where: str) -> np.ndarray:
    """bytes_to_pixels, off the event loop for large files; errors say where the file was sent (`where`)."""
    if len(data) <= INLINE_DECODE_BYTES:
        return restated(bytes_to_pixels, data, where=where)
    return await asyncio.to_thread(restated, bytes_to_pixels, data, where=where)


def digits_shape(shape: tuple[int, ...], instead: str) -> tuple[int, ...]:
    """(N, 28, 28) from an (N, 28, 28) or (N, 1, 28, 28) shape with 1 <= N <= the item limit, else InputError."""
    limit = get_settings().max_items_per_request
    squeezed = shape[:1] + shape[2:] if len(shape) == 4 and shape[1] == 1 else tuple(shape)
    if len(squeezed) != 3 or squeezed[1:] != (digits.SIDE, digits.SIDE) or not 1 <= squeezed[0] <= limit:
        raise InputError(f"The array has shape {tuple(shape)}; {instead.format(limit=limit)}.")
    return squeezed


def checked_pixels(array: np.ndarray, instead: str) -> np.ndarray:
    """Digits in MNIST layout, values 0-255 -> (N, 1, 28, 28) float32, or InputError saying what to send."""
    pixels = array.reshape(digits_shape(array.shape, instead)).astype(np.float32, copy=False)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise InputError(f"Values must be finite and within 0-255; {instead.format(limit=get_settings().max_items_per_request)}.")
    return pixels[:, None]


@answers_client_errors(NAME)
async def classify_image_body(request: Request) -> Response:
    """POST /digits/classify-image: the image file itself as the request body (no multipart, no JSON).

    The fast path for one image per request: the bytes go straight to the decoder, with no form parsing
    or temporary file. Same answer and errors as /digits/classify.
    """
    pixels = await decoded(await request.body(), where="as the request body")
    model = bentoml.get_current_service().models[NAME]
    (prediction,) = await predicted(model, pixels)
    return JSONResponse({**prediction, "model": model.reference()})


class DigitsAPI:
    """Mixed into the ModelServer: the /digits/* endpoints BentoML serves and documents."""

    digits_model = bentoml.models.BentoModel(settings.model_tag(NAME))
    models: dict[str, OnnxModel]

    @bentoml.api(route="/digits/classify")
    @answers_client_errors(NAME)
    async def digits_classify(self, image: Path) -> DigitResponse:
        """Classify one photo or scan of a handwritten digit (multipart field `image`: PNG or JPEG,
        any size, colour or grey, dark-on-light or light-on-dark)."""
        pixels = await asyncio.to_thread(bytes_to_pixels, image.read_bytes())
        model = self.models[NAME]
        (prediction,) = await predicted(model, pixels)
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
        return DigitArraysResponse(results=await predicted(model, pixels), model=model.reference())

    @bentoml.api(route="/digits/explain")
    @answers_client_errors(NAME)
    async def digits_explain(self, image: Path, ctx: bentoml.Context) -> DigitExplanation:
        """Classify one digit image like /digits/classify and say why: a heat map over the upload of what supported
        the predicted label (RISE: 128 random masks through the model). `?format=png` answers the upload with the
        map overlaid in red instead of JSON."""
        model = self.models[NAME]
        as_png = ctx.request.query_params.get("format") == "png"
        explained = await explain(model, image.read_bytes(), full_size=as_png)
        count_explanation(NAME)
        if as_png:
            png = await asyncio.to_thread(overlay_png, explained.pop("upload"), explained.pop("heat"))
            return Response(png, media_type="image/png", headers={"X-Model-Name": NAME, "X-Model-Version": model.version,
                                                                    "X-Digit-Label": str(explained["label"])})
        return DigitExplanation(**explained, model=model.reference())


NPY_SEND_INSTEAD = (
    "send a .npy file (numpy.save) of shape (N, 28, 28), N from 1 to {limit}, dtype uint8 or float, values 0-255, "
    "white digits on black"
)


def npy_to_pixels(data: bytes) -> np.ndarray:
    """A .npy upload of N digits in MNIST layout -> (N, 1, 28, 28) float32, or InputError.

    The header's shape and dtype are checked before any data is read, so a small file declaring a huge
    array allocates nothing; np.load(allow_pickle=False) refuses object arrays (pickles).
    """
    instead = NPY_SEND_INSTEAD.format(limit=get_settings().max_items_per_request)
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


@answers_client_errors(NAME)
async def classify_npy_body(request: Request) -> Response:
    """POST /digits/classify-tensor: a .npy array of N digits in MNIST layout as the body.

    The binary twin of /digits/classify-arrays for client-side batches: the same answer, without
    parsing and validating 784 JSON numbers per digit.
    """
    pixels = npy_to_pixels(await request.body())
    model = bentoml.get_current_service().models[NAME]
    return JSONResponse({"results": await predicted(model, pixels), "model": model.reference()})


def documented_routes() -> tuple[Operation, ...]:
    """The OpenAPI operations of the plain /digits routes (BentoML documents the others)."""
    one, one_refs = model_schema(DigitResponse)
    many, many_refs = model_schema(DigitArraysResponse)
    return (
        Operation("post", "/digits/classify-image", "Classify one digit image sent as the request body (PNG or JPEG)",
                  answer=one, schemas=one_refs, body_types=("image/png", "image/jpeg", "application/octet-stream")),
        Operation("post", "/digits/classify-tensor",
                  "Classify a .npy array (numpy.save) of shape (N, 28, 28) in MNIST layout, values 0-255",
                  answer=many, schemas=many_refs, body_types=("application/x-npy", "application/octet-stream")),
    )


# Explanations ------------------------------------------------------------------------------------

EXPLAIN_MAX_SIDE = 256
INK_LEVEL = 25.0  # of 255: below it a frame pixel is resampling ringing around the strokes, not ink
RISE_METHOD = (f"RISE: {RISE_MASKS} random masks ({RISE_CELLS}x{RISE_CELLS} cells, {RISE_KEEP:.0%} kept) over the "
               "model's 28x28 input; attribution = mean probability of the predicted digit when a pixel is kept minus "
               "when it is removed; mapped back onto the upload through the preprocessing's crop and scale")


def laid_out_upload(data: bytes) -> tuple[np.ndarray, digits.Layout, Image.Image]:
    """(the 28x28 frame, how it maps back onto the upload, the decoded upload)."""
    image = open_image(data, get_settings().max_image_pixels)
    frame, layout = digits.laid_out(to_grey(image))
    return frame, layout, image


async def explain(model: OnnxModel, data: bytes, full_size: bool = False) -> dict:
    """The prediction, and its heat map over the upload (downscaled past EXPLAIN_MAX_SIDE unless `full_size`)."""
    frame, layout, image = await asyncio.to_thread(laid_out_upload, data)
    masks = rise_masks(digits.SIDE)
    batch = np.concatenate([frame[None], masks * frame[None]])[:, None]  # (1 + masks, 1, 28, 28)
    outputs = await model.predict_outputs(model.feeds(batch))
    (prediction,) = predictions({name: output[:1] for name, output in outputs.items()},
                                model.metadata.preprocessing["ood_threshold"])
    # Only ink can be erased: pixels the model sees as (nearly) blank get no attribution (masks spread it to them).
    heat = rise_attribution(masks, outputs["probabilities"][1:, prediction["label"]]) * (frame > INK_LEVEL)
    upload_map, scale = layout.to_upload(heat, max_side=None if full_size else EXPLAIN_MAX_SIDE)
    if full_size:
        return {**prediction, "heat": upload_map, "upload": image}
    return {**prediction, "heatmap": np.round(upload_map, 5).tolist(), "heatmap_scale": scale, "method": RISE_METHOD}


# Open Inference Protocol v2 ----------------------------------------------------------------------

V2_PIXELS_INSTEAD = "send the input pixels as FP32 or UINT8 of shape [N, 28, 28], N from 1 to {limit}, values 0-255"


async def v2_infer(model: OnnxModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """v2: `image` (encoded PNG/JPEG files, /digits/classify's preprocessing) or `pixels` (MNIST layout)."""
    if len(inputs) != 1:
        raise InputError("Send exactly one of the inputs image (BYTES: PNG or JPEG files) or pixels (MNIST layout).")
    if "image" in inputs:
        files = inputs["image"].ravel()
        if not 1 <= len(files) <= get_settings().max_items_per_request:
            raise InputError(f"Send 1 to {get_settings().max_items_per_request} images per request, not {len(files)}.")
        pixels = np.concatenate([await decoded(data, where=f"as element {index} of the BYTES input 'image'")
                                 for index, data in enumerate(files)])
    else:
        pixels = checked_pixels(inputs["pixels"], V2_PIXELS_INSTEAD)
    outputs = await model.predict_outputs(model.feeds(pixels))
    threshold = model.metadata.preprocessing["ood_threshold"]
    return {"probabilities": outputs["probabilities"], "label": outputs["probabilities"].argmax(axis=1).astype(np.int64),
            "ood_score": outputs["ood_score"], "in_distribution": outputs["ood_score"] <= threshold}


# Registry entry ----------------------------------------------------------------------------------


def seven() -> np.ndarray:
    """A clear handwritten 7, drawn as MNIST would have it (white ink on black, 28x28 uint8)."""
    from PIL import ImageDraw

    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    return np.asarray(image)


def smoke_request() -> HttpRequest:
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata({"image": ("seven.png", png_bytes(seven()), "image/png")})
    return HttpRequest("/digits/classify", body, content_type)


def reads_seven(answer: HttpAnswer) -> bool:
    return answer.status == 200 and json.loads(answer.body)["label"] == 7


def one_prediction(answer: HttpAnswer) -> str | None:
    """None when the answer is a well-formed digit prediction, else what is wrong with it."""
    body = json.loads(answer.body) if answer.status == 200 else {}
    if len(body.get("probabilities", ())) != 10 or not 0 <= body.get("label", -1) <= 9 or "in_distribution" not in body:
        return f"unexpected answer {answer.status}: {answer.body[:200]!r}"
    return None


def many_predictions(answer: HttpAnswer) -> str | None:
    results = json.loads(answer.body).get("results", []) if answer.status == 200 else []
    if not results or any(len(result.get("probabilities", ())) != 10 for result in results):
        return f"unexpected answer {answer.status}: {answer.body[:200]!r}"
    return None


def v2_answered(answer: HttpAnswer) -> str | None:
    """None for a v2 answer with its binary outputs, else what is wrong."""
    if answer.status != 200 or "inference-header-content-length" not in {k.lower() for k in answer.headers}:
        return f"unexpected answer {answer.status}: {answer.body[:200]!r}"
    return None


ENTRY = ModelEntry(
    name=NAME,
    api=DigitsAPI,
    routes=(Route("/digits/classify-image", classify_image_body, methods=["POST"]),
            Route("/digits/classify-tensor", classify_npy_body, methods=["POST"])),
    operations=documented_routes(),
    spec_extensions={("post", "/digits/explain"): {
        "parameters": [{"name": "format", "in": "query", "required": False, "description": "png: the upload with the "
                        "heat map overlaid, instead of JSON", "schema": {"type": "string", "enum": ["json", "png"]}}],
        "responses": {"200": {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}}},
    v2=V2Signature(
        inputs=(TensorSig("image", ("BYTES",), (-1,), optional=True, binary=True),
                TensorSig("pixels", ("FP32", "UINT8"), (-1, digits.SIDE, digits.SIDE), optional=True)),
        outputs=(TensorSig("probabilities", ("FP32",), (-1, len(digits.LABELS))), TensorSig("label", ("INT64",), (-1,)),
                 TensorSig("ood_score", ("FP32",), (-1,)), TensorSig("in_distribution", ("BOOL",), (-1,))),
        infer=v2_infer,
        max_batch_size=settings.max_items_per_request,
    ),
    smoke=Smoke(smoke_request, reads_seven),
    load=LoadProfile(
        workloads=(
            Workload("digit-png", "/digits/classify", "loadtest.payloads:digit_pngs",
                     noop_path="/diagnostics/noop-upload", check=one_prediction),
            Workload("digit-png-body", "/digits/classify-image", "loadtest.payloads:digit_png_bodies",
                     noop_path="/diagnostics/noop-body", check=one_prediction, half_load=True),
            Workload("digit-arrays-64", "/digits/classify-arrays", "loadtest.payloads:digit_arrays_64", items=64,
                     check=many_predictions),
            Workload("digit-npy-64", "/digits/classify-tensor", "loadtest.payloads:digit_npys_64", items=64,
                     check=many_predictions),
            Workload("digit-v2-png", "/v2/models/digits/infer", "loadtest.payloads:digit_v2_pngs",
                     check=v2_answered, compare_with="digit-png-body"),
            Workload("digit-v2-pixels-64", "/v2/models/digits/infer", "loadtest.payloads:digit_v2_pixels_64", items=64,
                     check=v2_answered, compare_with="digit-npy-64"),
        ),
        mixed_weight=6,
        compute_feeds="loadtest.payloads:digits_feeds",
        peers=("loadtest.baseline_fastapi:app",),
    ),
    dry_run=DryRun(training_args=("--dataset", "mnist5k", "--width", "8")),
)
