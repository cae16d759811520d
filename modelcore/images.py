"""Safe decoding of uploaded images into greyscale arrays (torch-free, shared by all image models)."""

from __future__ import annotations

import io
import warnings
from http import HTTPStatus

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelcore.errors import InputError

ACCEPTED_FORMATS = ("PNG", "JPEG")
SEND_INSTEAD = "send one PNG or JPEG file in the multipart field 'image'"
# Modes whose samples do not fit in 8 bits; PIL's convert("L") would clip them.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode an upload, rejecting anything that is not a sane single-frame image."""
    if not data:
        raise InputError(f"The image is empty (0 bytes): {SEND_INSTEAD}.")
    image = _open_header(data)
    _check_dimensions(image, max_pixels)
    if getattr(image, "n_frames", 1) > 1:
        raise InputError(
            f"The image has {image.n_frames} frames (animated); send a single-frame image.",
            HTTPStatus.UNPROCESSABLE_ENTITY,
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"The {image.format} image is truncated or corrupt ({exc}); {SEND_INSTEAD}.") from exc
    return image


def _open_header(data: bytes) -> Image.Image:
    """Read only the header: format and declared size, no pixel data yet."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is stricter; PIL's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise InputError(
            f"The upload is not a PNG or JPEG image; {SEND_INSTEAD}.", HTTPStatus.UNSUPPORTED_MEDIA_TYPE
        ) from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"The image declares too many pixels ({exc}).", HTTPStatus.REQUEST_ENTITY_TOO_LARGE) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"The image header is corrupt ({exc}); {SEND_INSTEAD}.") from exc
    return image


def _check_dimensions(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width == 0 or height == 0:
        raise InputError(f"The image is {width}x{height} pixels (empty); {SEND_INSTEAD}.")
    if width * height > max_pixels:
        raise InputError(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
            " Downscale it before sending.",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


def to_grey(image: Image.Image) -> np.ndarray:
    """Greyscale luminance as float32 in [0, 255], shape (height, width); alpha composited on white."""
    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        return np.clip(pixels * (255.0 / top), 0, 255).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    # Transparent pixels become white paper, so a dark digit drawn on a transparent canvas still reads.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_grey(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload to a greyscale float32 array in [0, 255], or raise InputError."""
    return to_grey(open_image(data, max_pixels))
