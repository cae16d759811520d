"""Every class of bad input against every endpoint of the running server: a 4xx JSON error that says
what to send instead, never a 5xx, and the server keeps answering correctly afterwards."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from loadtest.profiles.digits import seven
from modelcore.images import png_bytes
from tests.e2e.calls import answered_correctly, every_endpoint_answers_correctly

pytestmark = pytest.mark.e2e

IMAGE_ENDPOINTS = ("/digits/classify", "/denoise")
JSON_ENDPOINTS = ("/digits/classify-arrays", "/sentiment/classify")
OVER_LIMIT = 11 * 2**20  # the default body limit is 10 MiB


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb() -> bytes:
    """A 12 kB PNG declaring 100 megapixels."""
    return encoded(Image.new("1", (10_000, 10_000)), "PNG")


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(seven()), Image.fromarray(255 - seven())]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def corrupt_png() -> bytes:
    """A PNG whose header is intact but whose compressed pixel data is garbage."""
    data = bytearray(png_bytes(seven()))
    for index in range(len(data) // 2, len(data) - 16):
        data[index] ^= 0x5A
    return bytes(data)


BAD_UPLOADS = {
    "not_an_image": (b"hello, I am text", 415),
    "truncated_png": (png_bytes(seven())[:60], 400),
    "corrupt_png": (corrupt_png(), 400),
    "empty_file": (b"", 400),
    "decompression_bomb": (bomb(), 413),
    "animated_png": (animated("PNG"), 422),
    "gif_format": (animated("GIF"), 415),
    "tiff_format": (encoded(Image.fromarray(seven()), "TIFF"), 415),
}


def error_message(response) -> str:
    """The error text of a 4xx body: ours is {"error": ...}; BentoML's validation errors come as a list."""
    body = response.json()
    if isinstance(body, list):
        body = body[0]
    return body["error"] if isinstance(body["error"], str) else json.dumps(body["error"])


def assert_client_error(response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert len(error_message(response)) > 15


@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS)
@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_get_their_4xx(client, endpoint, case):
    data, status = BAD_UPLOADS[case]
    assert_client_error(client.post(endpoint, files={"image": ("upload.png", data, "image/png")}), status)


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_raw_bodies_get_the_same_4xx(client, case):
    data, status = BAD_UPLOADS[case]
    response = client.post("/digits/classify-image", content=data, headers={"content-type": "image/png"})
    assert_client_error(response, status)
    assert "multipart" not in error_message(response)


def test_raw_body_over_the_size_limit_gets_413(client):
    response = client.post("/digits/classify-image", content=b"\x00" * OVER_LIMIT, headers={"content-type": "image/png"})
    assert_client_error(response, 413)


@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS)
@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        pytest.param({"json": {"image": "aGVsbG8="}}, None, id="json_body"),
        pytest.param({"content": b"plain words", "headers": {"content-type": "text/plain"}}, None, id="text_plain"),
        pytest.param({"files": {"picture": ("x.png", b"\x89PNG", "image/png")}}, 400, id="wrong_field"),
        pytest.param({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, None,
                     id="empty_multipart"),
        pytest.param({"content": b"\x00" * OVER_LIMIT, "headers": {"content-type": "multipart/form-data; boundary=x"}},
                     413, id="over_size_limit"),
    ],
)
def test_malformed_image_requests_get_their_4xx(client, endpoint, kwargs, status):
    assert_client_error(client.post(endpoint, **kwargs), status)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"texts": ["unterminated', id="invalid_json"),
        pytest.param(b'{"texts": ["\xff\xfe"], "images": [[["\xff"]]]}', id="invalid_utf8"),
        pytest.param(("[" * 100_000 + "]" * 100_000).encode(), id="deeply_nested"),
        pytest.param(json.dumps({"texts": [[[[[[["x"]]]]]]], "images": [[[[[[0]]]]]]}).encode(), id="nested_wrong_types"),
        pytest.param(b'{"texts": ' + b"[" + b"0," * 2_000_000 + b"0]}", id="huge_array_texts"),
        pytest.param(b'{"images": ' + b"[" + b"0," * 2_000_000 + b"0]}", id="huge_array_images"),
        pytest.param(b'{"images": [[[NaN]]], "texts": [NaN]}', id="nan"),
        pytest.param(b'{"images": [[[Infinity]]], "texts": [-Infinity]}', id="infinity"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array_not_object"),
        pytest.param(b'{"unexpected": 1}', id="wrong_field"),
    ],
)
def test_bad_json_gets_its_4xx(client, endpoint, content):
    response = client.post(endpoint, content=content, headers={"content-type": "application/json"})
    assert_client_error(response)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def declared_but_absent(count: int) -> bytes:
    """A .npy header declaring `count` digits, followed by no data (a tiny file promising a big array)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (count, 28, 28)})
    return buffer.getvalue()


BAD_NPY = {
    "not_npy": b"\x93NUMPY but not really",
    "json": b'{"images": [[[0]]]}',
    "object_array_pickle": npy(np.array([{"a": 1}, {"b": 2}], dtype=object)),
    "wrong_shape": npy(np.zeros((2, 27, 28), np.uint8)),
    "too_many": npy(np.zeros((257, 28, 28), np.uint8)),
    "huge_declared_shape": declared_but_absent(9_999_999),
    "declared_but_truncated": declared_but_absent(200),
    "malformed_header": npy(np.zeros((1, 28, 28), np.uint8)).replace(b"(1, 28, 28)", b"(1, 28, 2("),
    "nan": npy(np.full((2, 28, 28), np.nan, np.float32)),
    "out_of_range": npy(np.full((2, 28, 28), 300.0)),
    "complex": npy(np.zeros((2, 28, 28), np.complex64)),
    "empty_body": b"",
}


@pytest.mark.parametrize("case", sorted(BAD_NPY))
def test_bad_npy_bodies_get_400(client, case):
    response = client.post("/digits/classify-tensor", content=BAD_NPY[case], headers={"content-type": "application/x-npy"})
    assert_client_error(response, 400)
    assert ".npy" in error_message(response)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_json_endpoints_refuse_other_content_types(client, endpoint):
    assert_client_error(client.post(endpoint, files={"texts": ("t.txt", b"hello", "text/plain")}))
    assert_client_error(client.post(endpoint, content=b"texts=hello", headers={"content-type": "text/plain"}))


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_json_over_the_size_limit_gets_413(client, endpoint):
    body = b'{"texts": ["' + b"a" * OVER_LIMIT + b'"]}'
    assert_client_error(client.post(endpoint, content=body, headers={"content-type": "application/json"}), 413)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("I;16", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("RGB", "JPEG")],
)
def test_unusual_but_valid_image_modes_are_understood(client, mode, fmt):
    """16-bit, CMYK, palette, alpha and 1-bit uploads of the same digit all read as that digit."""
    digit = Image.fromarray(seven())
    if mode == "I;16":
        image = Image.fromarray(seven().astype(np.uint16) * 257)
    elif mode == "1":
        image = digit.point(lambda v: 255 if v > 127 else 0).convert("1")
    else:
        image = digit.convert(mode)
    response = client.post("/digits/classify", files={"image": (f"seven.{fmt.lower()}", encoded(image, fmt), "image/png")})
    assert answered_correctly("digits", response), response.text[:300]


BOUNDARY = "9cc651cd2c8d168349f50fede4c361ac"
MALFORMED_BODIES = {
    "multipart_without_boundary": ({"content-type": "multipart/form-data"}, b'{"texts": ["0"]}'),
    "multipart_broken_body": ({"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                              f"--{BOUNDARY}\r\nFalse--{BOUNDARY}--\r\n".encode()),
    "multipart_unterminated": ({"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                               f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc'.encode()),
    "multipart_bad_header": ({"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                             f"--{BOUNDARY}\r\nContent-Disposition\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()),
    "json_wrong_fields": ({"content-type": "application/json"}, b'{"unexpected": [0]}'),
    "form_urlencoded": ({"content-type": "application/x-www-form-urlencoded"}, b"texts=hello&image=x"),
    "text_plain": ({"content-type": "text/plain; charset=utf-8"}, b"hello"),
    "odd_charset": ({"content-type": "application/json; charset=latin-1"}, '{"texts": ["café"]}'.encode("latin-1")),
    "unknown_type": ({"content-type": "application/x-made-up"}, b"\x00\x01\x02"),
    "bentoml_pickle": ({"content-type": "application/vnd.bentoml+pickle"}, b"\x80\x04K\x01."),
    "no_content_type": ({}, b"\x89PNG\r\n"),
}


def documented_posts(client) -> list[str]:
    spec = client.get("/docs.json").json()
    return sorted(path for path, methods in spec["paths"].items() if "post" in methods)


def test_every_documented_post_answers_every_malformed_body_with_a_4xx(client):
    """Every route in the spec, BentoML's and the plain ones (and any added later), against every malformed body."""
    paths = documented_posts(client)
    assert {"/digits/classify", "/digits/classify-image", "/sentiment/classify", "/denoise"} <= set(paths)
    for path in paths:
        for case, (headers, body) in MALFORMED_BODIES.items():
            response = client.post(path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (path, case, response.status_code, response.text[:300])
            assert response.headers["content-type"].startswith("application/json"), (path, case)
            assert isinstance(response.json()["error"], str), (path, case, response.text[:300])


@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS + JSON_ENDPOINTS)
def test_a_body_in_the_wrong_format_is_told_which_format_to_send(client, endpoint):
    wrong = {"content": b'{"texts": ["x"]}', "headers": {"content-type": "application/json"}} if endpoint in IMAGE_ENDPOINTS \
        else {"files": {"texts": ("t.txt", b"hello", "text/plain")}}
    response = client.post(endpoint, **wrong)
    assert_client_error(response, 415)
    expected = "multipart/form-data" if endpoint in IMAGE_ENDPOINTS else "application/json"
    assert expected in error_message(response)


def test_the_server_still_answers_correctly_after_every_attack(client):
    assert every_endpoint_answers_correctly(client)
