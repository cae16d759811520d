"""The Open Inference Protocol v2 on a real server, driven by Triton's own client (tritonclient, sync and asyncio).

Server and model health, metadata, configuration, and inference for every model in JSON and binary form;
the answers equal the friendly endpoints' for the same input.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from PIL import Image
from tritonclient.utils import InferenceServerException

from loadtest.profiles.denoise import noisy_png
from loadtest.profiles.digits import seven
from modelcore.images import png_bytes
from service.models.registry import built_in_models

pytestmark = pytest.mark.e2e

TEXTS = ["I love this airline, best flight ever", "Flight delayed again and nobody tells us why."]


@pytest.fixture(scope="module")
def triton_client(server_url):
    client = triton.InferenceServerClient(server_url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def bytes_input(name: str, elements: list, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=object), binary_data=binary)
    return tensor


def outputs(*names: str, binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def digit_pngs(mnist_test) -> list[bytes]:
    return [png_bytes(image) for image in mnist_test[0][:4]] + [png_bytes(seven())]


def test_server_and_every_model_are_live_ready_and_described(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert {"binary_tensor_data", "model_configuration"} <= set(metadata["extensions"])
    for model in built_in_models():
        assert triton_client.is_model_ready(model.name)
        described = triton_client.get_model_metadata(model.name)
        assert [t["name"] for t in described["inputs"]] == [t.name for t in model.inputs]
        assert [t["name"] for t in described["outputs"]] == [t.name for t in model.outputs]
        version = described["versions"][0]
        assert triton_client.is_model_ready(model.name, model_version=version)
        assert not triton_client.is_model_ready(model.name, model_version="not-a-version")
        config = triton_client.get_model_config(model.name)
        assert config["name"] == model.name and {"max_batch_size", "input", "output"} <= set(config)


def test_digits_config_declares_dynamic_batching(triton_client):
    config = triton_client.get_model_config("digits")
    assert config["max_batch_size"] > 0 and config["dynamic_batching"]["preferred_batch_size"]
    assert [(t["name"], t["dims"]) for t in config["input"]] == [("image", [1]), ("pixels", [28, 28])]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_digit_images_answer_like_the_friendly_endpoint(triton_client, client, mnist_test, binary):
    import base64

    files = digit_pngs(mnist_test)
    elements = files if binary else [base64.b64encode(data).decode() for data in files]  # JSON form: base64 strings
    result = triton_client.infer("digits", [bytes_input("image", elements, binary)],
                                 outputs=outputs("probabilities", "label", binary=binary))
    friendly = [client.post("/digits/classify", files={"image": ("d.png", data, "image/png")}).json() for data in files]
    np.testing.assert_allclose(result.as_numpy("probabilities"), [answer["probabilities"] for answer in friendly],
                               rtol=1e-5, atol=1e-6)
    assert result.as_numpy("label").tolist() == [answer["label"] for answer in friendly]
    assert result.as_numpy("label")[-1] == 7


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_digit_pixels_answer_like_classify_arrays(triton_client, client, mnist_test, datatype, binary):
    images = mnist_test[0][:8]
    pixels = triton.InferInput("pixels", list(images.shape), datatype)
    pixels.set_data_from_numpy(images.astype(np.float32 if datatype == "FP32" else np.uint8), binary_data=binary)
    result = triton_client.infer("digits", [pixels], outputs=outputs("probabilities", "label", binary=binary))
    friendly = client.post("/digits/classify-arrays", json={"images": images.tolist()}).json()["results"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), [r["probabilities"] for r in friendly], rtol=1e-5, atol=1e-6)
    assert result.as_numpy("label").tolist() == [r["label"] for r in friendly]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_sentiment_answers_like_the_friendly_endpoint(triton_client, client, binary):
    result = triton_client.infer("sentiment", [bytes_input("text", TEXTS, binary)],
                                 outputs=outputs("probabilities", "label", binary=binary))
    friendly = client.post("/sentiment/classify", json={"texts": TEXTS}).json()["results"]
    labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")]
    assert labels == [r["label"] for r in friendly] == ["positive", "negative"]
    expected = [[r["probabilities"][name] for name in ("negative", "neutral", "positive")] for r in friendly]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_denoise_answers_the_same_png_as_the_friendly_endpoint(triton_client, client, binary):
    import base64

    upload = noisy_png()
    sigma = triton.InferInput("sigma", [1], "FP32")
    sigma.set_data_from_numpy(np.array([25.0], dtype=np.float32), binary_data=binary)
    image = upload if binary else base64.b64encode(upload).decode()
    result = triton_client.infer("denoise", [bytes_input("image", [image], binary), sigma],
                                 outputs=outputs("image", binary=binary))
    answered = result.as_numpy("image")[0]
    answered = answered if binary else base64.b64decode(answered)
    friendly = client.post("/denoise", files={"image": ("n.png", upload, "image/png")}, data={"sigma": "25"}).content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answered))), np.asarray(Image.open(io.BytesIO(friendly))))


def test_the_asyncio_client_gets_the_same_answers(server_url, client):
    async def scenario():
        async_client = triton_aio.InferenceServerClient(server_url.removeprefix("http://"))
        try:
            ready = await async_client.is_server_ready() and await async_client.is_model_ready("sentiment")
            config = await async_client.get_model_config("denoise")
            results = await asyncio.gather(*(async_client.infer("sentiment", [bytes_input("text", [text])])
                                             for text in TEXTS))
            digit = await async_client.infer("digits", [bytes_input("image", [png_bytes(seven())])])
            return ready, config, results, digit
        finally:
            await async_client.close()

    ready, config, results, digit = asyncio.run(scenario())
    assert ready and config["name"] == "denoise"
    assert [result.as_numpy("label")[0] for result in results] == [b"positive", b"negative"]
    assert digit.as_numpy("label").tolist() == [7]


@pytest.mark.parametrize(
    ("model", "make_inputs", "fragment"),
    [
        ("digits", lambda: [bytes_input("image", [b"not an image"])], "PNG or JPEG"),
        ("digits", lambda: [bytes_input("text", ["hello"])], "Unknown input"),
        ("sentiment", lambda: [bytes_input("text", [b"\xff\xfe"])], "UTF-8"),
        ("sentiment", lambda: [bytes_input("text", ["   "])], "empty"),
        ("denoise", lambda: [bytes_input("image", [noisy_png(), noisy_png()])], "shape"),
        ("digits", lambda: [], "inputs"),
    ],
)
def test_bad_v2_requests_get_their_4xx_with_a_message(triton_client, model, make_inputs, fragment):
    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer(model, make_inputs())
    assert raised.value.status() in ("400", "413", "415", "422") and fragment in raised.value.message()


def test_unknown_models_and_versions_get_404(client, triton_client):
    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer("no-such-model", [bytes_input("text", ["x"])])
    assert raised.value.status() == "404"
    version = triton_client.get_model_metadata("digits")["versions"][0]
    assert client.get(f"/v2/models/digits/versions/{version}").status_code == 200
    answer = client.post("/v2/models/digits/versions/000000000000/infer", json={"inputs": []})
    assert answer.status_code == 404 and "version" in answer.json()["error"]


# A BYTES element declaring 2 GB in an 8-byte binary section.
BYTES_HEADER = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 8}}]}).encode()


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"not json", {}),
        (b'{"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 99}}]}',
         {}),
        (b'{"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "FP32", "data": [1, 2]}]}', {}),
        (b'{"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "FP64", "data": []}]}', {}),
        (b'{"inputs": [{"name": "pixels", "shape": [9999999, 9999, 9999], "datatype": "FP32", "data": []}]}', {}),
        (b'{"inputs": []}xxxx', {"Inference-Header-Content-Length": "99999"}),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "minus one"}),
        (BYTES_HEADER + b"\xff\xff\xff\x7f....", {"Inference-Header-Content-Length": str(len(BYTES_HEADER))}),
    ],
    ids=["not_json", "binary_size_past_the_end", "too_few_values", "wrong_datatype", "huge_shape",
         "header_length_past_the_end", "header_length_not_a_number", "bytes_element_length_past_the_end"],
)
def test_malformed_v2_bodies_get_a_4xx_json_error(client, body, headers):
    response = client.post("/v2/models/digits/infer", content=body, headers={"content-type": "application/json", **headers})
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)


def test_v2_health_routes_need_no_api_key_and_infer_does(start_server):
    guarded = start_server(api_key="k3y-for-tests-0123456789abcdef")
    with httpx.Client(base_url=guarded.url, timeout=30) as plain:
        assert plain.get("/v2/health/ready").status_code == 200
        assert plain.get("/v2/health/live").status_code == 200
        assert plain.post("/v2/models/digits/infer", json={"inputs": []}).status_code == 401
