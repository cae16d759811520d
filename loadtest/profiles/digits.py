"""Digits' load profile: a drawn 7 as the smoke request, real MNIST test digits for every endpoint."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw
from urllib3 import encode_multipart_formdata

from loadtest import payloads
from loadtest.profiles import HttpAnswer, HttpRequest, Profile, Smoke, Workload
from modelcore.images import png_bytes


def seven() -> np.ndarray:
    """A clear handwritten 7, drawn as MNIST would have it (white ink on black, 28x28 uint8)."""
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    return np.asarray(image)


def smoke_request() -> HttpRequest:
    body, content_type = encode_multipart_formdata({"image": ("seven.png", png_bytes(seven()), "image/png")})
    return HttpRequest("/digits/classify", body, content_type)


def reads_seven(answer: HttpAnswer) -> bool:
    return answer.status == 200 and json.loads(answer.body)["label"] == 7


def one_prediction(answer: HttpAnswer) -> str | None:
    """None when the answer is a well-formed digit prediction, else what is wrong with it."""
    body = json.loads(answer.body) if answer.status == 200 else {}
    if len(body.get("probabilities", ())) != 10 or not 0 <= body.get("label", -1) <= 9 or "in_distribution" not in body:
        return answer.unexpected()
    return None


def many_predictions(answer: HttpAnswer) -> str | None:
    return answer.results_wrong(lambda result: len(result.get("probabilities", ())) == 10)


def v2_answered(answer: HttpAnswer) -> str | None:
    """None for a v2 answer with its binary outputs, else what is wrong."""
    if answer.status != 200 or "inference-header-content-length" not in {k.lower() for k in answer.headers}:
        return answer.unexpected()
    return None


PROFILE = Profile(
    name="digits",
    smoke=Smoke(smoke_request, reads_seven),
    workloads=(
        Workload("digit-png", "/digits/classify", payloads.digit_pngs, one_prediction,
                 noop_path="/diagnostics/noop-upload"),
        Workload("digit-png-body", "/digits/classify-image", payloads.digit_png_bodies, one_prediction,
                 noop_path="/diagnostics/noop-body", half_load=True),
        Workload("digit-arrays-64", "/digits/classify-arrays", payloads.digit_arrays_64, many_predictions, items=64),
        Workload("digit-npy-64", "/digits/classify-tensor", payloads.digit_npys_64, many_predictions, items=64),
        Workload("digit-v2-png", "/v2/models/digits/infer", payloads.digit_v2_pngs, v2_answered,
                 compare_with="digit-png-body"),
        Workload("digit-v2-pixels-64", "/v2/models/digits/infer", payloads.digit_v2_pixels_64, v2_answered, items=64,
                 compare_with="digit-npy-64"),
    ),
    mixed_weight=6,
    compute_feeds=payloads.digits_feeds,
)
