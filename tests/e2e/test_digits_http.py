"""The shipped digits model behind a real server, called over HTTP like any client would."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from loadtest.digits_eval import evaluate
from modelcore import digits
from modelcore.card import ModelMetadata
from modelcore.images import png_bytes

pytestmark = pytest.mark.e2e
TARGET_ACCURACY = 0.993


def upload(data: bytes, name: str = "digit.png", content_type: str = "image/png") -> dict:
    return {"image": (name, data, content_type)}


def photo_like(image: np.ndarray) -> bytes:
    """A digit as a phone would see it: dark ink on light paper, colour, 10x larger, JPEG."""
    page = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_health_endpoints_answer(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_models_endpoint_lists_the_shipped_digits_model(client, shipped_dir):
    shipped = ModelMetadata.read(shipped_dir / "digits")
    (model,) = [m for m in client.get("/models").json()["models"] if m["name"] == "digits"]
    assert model["version"] == shipped.version
    assert model["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert model["metrics"]["test_accuracy"] == shipped.metrics["test_accuracy"]
    assert model["provider"] == "CPUExecutionProvider"


def test_openapi_spec_documents_the_digits_endpoints(client):
    paths = client.get("/docs.json").json()["paths"]
    assert {"/digits/classify", "/digits/classify-arrays"} <= set(paths)


def test_served_accuracy_on_the_official_test_set_meets_the_target(server_url, mnist_test):
    images, labels = mnist_test
    report = evaluate(server_url, images, labels, concurrency=16)
    print(f"\nserved MNIST test set: {report}")
    assert report["errors"] == 0
    assert report["accuracy"] >= TARGET_ACCURACY


def test_photos_of_dark_digits_on_light_paper_are_read(client, mnist_test):
    images, labels = mnist_test
    answers = [client.post("/digits/classify", files=upload(photo_like(image), "d.jpg", "image/jpeg")) for image in images[:100]]
    assert all(answer.status_code == 200 for answer in answers)
    accuracy = np.mean([answer.json()["label"] for answer in answers] == labels[:100])
    assert accuracy >= 0.97


def test_classify_response_has_the_documented_shape(client, mnist_test):
    body = client.post("/digits/classify", files=upload(png_bytes(mnist_test[0][0]))).json()
    assert set(body) >= {"label", "probabilities", "model"}
    assert body["label"] == 7 and len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-4
    assert set(body["model"]) == {"name", "version"}


def test_classify_arrays_agrees_with_png_uploads(client, mnist_test):
    images, _ = mnist_test
    layouts = [digits.to_mnist_layout(image.astype(np.float32)).tolist() for image in images[:64]]
    batch = client.post("/digits/classify-arrays", json={"images": layouts}).json()
    singles = [client.post("/digits/classify", files=upload(png_bytes(image))).json()["label"] for image in images[:64]]
    assert [result["label"] for result in batch["results"]] == singles


def huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 Mpx, yet only ~12 kB on the wire
    return buffer.getvalue()


def truncated_png() -> bytes:
    data = png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))
    return data[: len(data) // 2]


def arrays(value, count=1) -> dict:
    return {"images": [[[value] * 28] * 28] * count}


UPLOAD_CASES = {
    "not_an_image": (lambda: upload(b"GIF? no: plain text", "notes.txt", "text/plain"), 415),
    "truncated_png": (lambda: upload(truncated_png()), 400),
    "empty_file": (lambda: upload(b""), 400),
    "blank_image": (lambda: upload(png_bytes(np.full((50, 50), 255, np.uint8))), 422),
    "ten_thousand_square": (lambda: upload(huge_png()), 413),
    "over_size_limit": (lambda: upload(bytes(11 * 2**20)), 413),
}


@pytest.mark.parametrize("case", UPLOAD_CASES)
def test_bad_upload_gets_its_4xx_with_an_error_message(client, case):
    make_files, status = UPLOAD_CASES[case]
    response = client.post("/digits/classify", files=make_files())
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("case", "request_kwargs", "status"),
    [
        ("empty_body", {}, 415),
        ("json_instead_of_multipart", {"json": {"image": "aGVsbG8="}}, 415),
        ("wrong_field_name", {"files": {"picture": ("d.png", b"\x89PNG", "image/png")}}, 400),
    ],
)
def test_malformed_classify_request_gets_its_4xx_naming_the_field(client, case, request_kwargs, status):
    response = client.post("/digits/classify", **request_kwargs)
    assert response.status_code == status, response.text
    assert "image" in response.json()["error"] + str(response.json().get("detail"))


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("wrong_shape", json.dumps({"images": [[[0.0] * 27] * 28]})),
        ("nan", json.dumps(arrays(0.0)).replace("0.0", "NaN", 1)),
        ("infinity", json.dumps(arrays(0.0)).replace("0.0", "Infinity", 1)),
        ("out_of_range", json.dumps(arrays(300.0))),
        ("not_numbers", json.dumps(arrays("x"))),
        ("no_images", json.dumps({"images": []})),
        ("too_many_images", json.dumps(arrays(0.0, count=257))),
        ("invalid_json", '{"images": [[['),
    ],
)
def test_bad_arrays_get_400_saying_what_is_wrong(client, case, body):
    response = client.post("/digits/classify-arrays", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_server_still_answers_correctly_after_bad_input(client, mnist_test):
    for make_files, _ in UPLOAD_CASES.values():
        client.post("/digits/classify", files=make_files())
    response = client.post("/digits/classify", files=upload(png_bytes(mnist_test[0][1])))
    assert response.status_code == 200 and response.json()["label"] == 2


def test_metrics_expose_request_and_batch_figures(client, mnist_test):
    client.post("/digits/classify", files=upload(png_bytes(mnist_test[0][0])))
    metrics = client.get("/metrics").text
    assert "modelserver_batch_size_bucket" in metrics and 'model="digits"' in metrics
    assert "modelserver_client_errors_total" in metrics


@pytest.mark.parametrize("value", ["http://127.0.0.1:9/digit.png", "/etc/hostname", "file:///etc/passwd"])
def test_text_in_the_image_field_is_never_fetched_or_opened(client, value):
    multipart_text = client.post("/digits/classify", files={"image": (None, value)})  # a text part, no file name
    assert multipart_text.status_code == 415, multipart_text.text
    assert "PNG or JPEG" in multipart_text.json()["error"]
    url_encoded = client.post("/digits/classify", data={"image": value})  # a form that cannot carry a file
    assert url_encoded.status_code == 415, url_encoded.text
    assert "multipart/form-data" in url_encoded.json()["error"]


def test_raw_body_endpoint_answers_like_the_multipart_one(client, mnist_test):
    images, labels = mnist_test
    for image, label in zip(images[:20], labels[:20]):
        raw = client.post("/digits/classify-image", content=png_bytes(image), headers={"content-type": "image/png"})
        multipart = client.post("/digits/classify", files=upload(png_bytes(image)))
        assert raw.status_code == 200 and raw.json() == multipart.json()
    assert raw.json()["model"]["name"] == "digits"


def test_npy_tensor_endpoint_answers_like_the_json_arrays_one(client, mnist_test):
    images = mnist_test[0][:64]
    buffer = io.BytesIO()
    np.save(buffer, images)
    tensor = client.post("/digits/classify-tensor", content=buffer.getvalue(), headers={"content-type": "application/x-npy"})
    arrays = client.post("/digits/classify-arrays", json={"images": images.tolist()})
    assert tensor.status_code == 200
    assert [r["label"] for r in tensor.json()["results"]] == [r["label"] for r in arrays.json()["results"]]
    np.testing.assert_allclose([r["probabilities"] for r in tensor.json()["results"]],
                               [r["probabilities"] for r in arrays.json()["results"]], atol=1e-6)
