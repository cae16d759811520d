"""modelcore.images: real files in every mode users send, and the broken ones they also send."""

import io
import struct
import zlib
from http import HTTPStatus

import numpy as np
import pytest
from PIL import Image

from modelcore.errors import InputError
from modelcore.images import decode_grey

LIMIT = 4096 * 4096


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(mode: str = "L", size=(40, 30)) -> Image.Image:
    values = np.tile(np.linspace(0, 255, size[0], dtype=np.uint8), (size[1], 1))
    return Image.fromarray(values).convert(mode)


def rejected(data: bytes, limit: int = LIMIT) -> InputError:
    with pytest.raises(InputError) as caught:
        decode_grey(data, limit)
    return caught.value


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "LA", "RGBA", "1"])
def test_png_in_any_common_mode_decodes_to_grey(mode):
    grey = decode_grey(encode(gradient(mode)), LIMIT)
    assert grey.shape == (30, 40) and grey.dtype == np.float32
    assert 0 <= grey.min() and grey.max() <= 255


def test_jpeg_and_cmyk_jpeg_decode():
    assert decode_grey(encode(gradient("RGB"), "JPEG"), LIMIT).shape == (30, 40)
    assert decode_grey(encode(gradient("CMYK"), "JPEG"), LIMIT).shape == (30, 40)


def test_16_bit_png_is_scaled_not_clipped():
    wide = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert decode_grey(encode(wide), LIMIT).max() == pytest.approx(255.0)
    half = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert decode_grey(encode(half), LIMIT).max() == pytest.approx(127.5, abs=0.5)


def test_transparent_background_reads_as_white_paper():
    canvas = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    canvas.putpixel((5, 5), (0, 0, 0, 255))
    grey = decode_grey(encode(canvas), LIMIT)
    assert grey[0, 0] == 255 and grey[5, 5] == 0


def test_empty_upload_gets_400():
    assert rejected(b"").status == HTTPStatus.BAD_REQUEST


def test_non_image_gets_415_naming_the_accepted_formats():
    error = rejected(b"%PDF-1.4 definitely not an image")
    assert error.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "PNG or JPEG" in error.message


def test_gif_is_not_an_accepted_format():
    assert rejected(encode(gradient(), "GIF")).status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE


def test_truncated_png_gets_400():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    error = rejected(data[: len(data) // 2])
    assert error.status == HTTPStatus.BAD_REQUEST
    assert "truncated or corrupt" in error.message


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_huge_declared_dimensions_get_413_before_decoding():
    error = rejected(png_declaring(100_000, 100_000))
    assert error.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_image_over_the_pixel_limit_gets_413_saying_the_limit():
    error = rejected(encode(gradient()), limit=1000)
    assert error.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "1,200 pixels" in error.message and "1,000" in error.message


def test_zero_size_image_is_rejected():
    assert rejected(png_declaring(0, 10)).status in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)


def test_animated_png_gets_422():
    frames = [gradient(), gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], save_all=True, append_images=frames[1:])
    error = rejected(data)
    assert error.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "frames" in error.message
