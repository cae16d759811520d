"""Safe decoding of uploaded images into greyscale arrays (torch-free, shared by all image models)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelcore.errors import InputError

ACCEPTED_FORMATS = ("PNG", "JPEG")
FIELD = "the multipart field 'image'"
SEND_INSTEAD = f"send one PNG or JPEG file in {FIELD}"
# Modes whose samples do not fit in 8 bits; PIL's convert("L") would clip them.
T = TypeVar("T")
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


def restated(decode: Callable[[bytes], T], data: bytes, where: str) -> T:
    """decode(data), with its errors saying the file was sent `where` (e.g. "as the request body")."""
    try:
        return decode(data)
    except InputError as exc:
        raise InputError(exc.message.replace(f"in {FIELD}", where), exc.status) from None


def decode_grey(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload to a greyscale float32 array in [0, 255], or raise InputError."""
    return to_grey(open_image(data, max_pixels))


@dataclass
class Planes:
    """An image split into float planes in [0, 1] for per-channel processing, and how to put it back."""

    planes: list[np.ndarray]  # each (height, width) float32
    alpha: np.ndarray | None  # (height, width) uint8, passed through untouched
    mode: str  # mode of the rebuilt image: "L", "RGB" or "I;16" (+ alpha: "LA", "RGBA")


def split_planes(image: Image.Image) -> Planes:
    """Per-channel float planes of a decoded image: grey -> 1 plane, colour -> R, G, B; alpha kept aside."""
    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        return Planes([np.clip(pixels / top, 0, 1)], None, "I;16")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    grey = image.mode in ("1", "L", "LA") or (image.mode in ("P", "PA") and _palette_is_grey(image))
    working = ("L" if grey else "RGB") + ("A" if has_alpha else "")
    pixels = np.asarray(image.convert(working), dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    colour = pixels[..., : 1 if grey else 3]
    alpha = (pixels[..., -1] * 255).round().astype(np.uint8) if has_alpha else None
    return Planes([colour[..., c] for c in range(colour.shape[-1])], alpha, working.rstrip("A"))


def _palette_is_grey(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def merge_planes(planes: Planes) -> Image.Image:
    """Rebuild an image from (processed) planes: same size; grey, colour, 16-bit and alpha preserved."""
    if planes.mode == "I;16":
        return Image.fromarray((np.clip(planes.planes[0], 0, 1) * 65535).round().astype(np.uint16))
    channels = [(np.clip(plane, 0, 1) * 255).round().astype(np.uint8) for plane in planes.planes]
    if planes.alpha is not None:
        channels.append(planes.alpha)
    stacked = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    return Image.fromarray(stacked)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, C) array as PNG bytes, compressed as Pillow does by default (what clients send)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG bytes (fast compression: the response is made per request)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
