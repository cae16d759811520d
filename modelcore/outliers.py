"""Things users send to a digit classifier that are not digits: letters and symbols, photo crops, noise,
scribbles and blank textured paper - generated as uploads (greyscale pages), for two disjoint purposes:

- `training_outliers`: what the out-of-distribution head learns from (outlier exposure). Fonts from Debian's
  font packages other than DejaVu, training images of the denoiser (never its seven test photographs), and
  their own noise, scribble and paper generators.
- `held_out_outliers`: the evaluation set, which training never sees: the DejaVu fonts that ship with the
  machine, the seven scikit-image test photographs (camera, moon, coins, astronaut, coffee, chelsea, rocket),
  and other noise, scribble and paper generators.

Both are seeded, so the sets are fixed in code. Every upload then goes through the served preprocessing
(`modelcore.digits.to_mnist_layout`); those it rejects as blank (HTTP 422 at the server) are counted.
Needs Pillow; the stroke style of letters needs scikit-image (training only).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from modelcore import digits
from modelcore.errors import InputError

KINDS = ("letters", "photos", "noise", "scribbles", "paper")
CHARACTERS = string.ascii_letters + "#$%&*+=?@!<>{}[]~^|/\\"
# Letters that handwriting turns into digits (O/0, l/1, Z/2, S/5, b/6, B/8, g/9...): the detector must not learn
# that these shapes are outliers, or it flags real digits. Training leaves them out; the held-out set keeps them.
DIGIT_LOOKALIKES = set("OoQDUlIij|!ZzSsBbgqG")
TRAINING_CHARACTERS = "".join(c for c in CHARACTERS if c not in DIGIT_LOOKALIKES)
FONT_ROOTS = (Path("/usr/share/fonts"),)
HELD_OUT_FONT_FAMILY = "dejavu"
Upload = np.ndarray  # (H, W) float32 in [0, 255]: dark ink on light paper, as a photo or scan would be


def font_files(held_out: bool, roots: tuple[Path, ...] = FONT_ROOTS) -> list[Path]:
    """TrueType/OpenType fonts on this machine: DejaVu for the held-out set, every other family for training."""
    found = sorted(path for root in roots if root.is_dir() for path in root.rglob("*") if path.suffix.lower() in (".ttf", ".otf"))
    return [path for path in found if (HELD_OUT_FONT_FAMILY in str(path).lower()) == held_out]


# letters and symbols -----------------------------------------------------------------------------


def glyph(font: Path, character: str, rng: np.random.Generator) -> Upload:
    """One character in one font, black on white, at a random size, slant and margin."""
    size = int(rng.integers(28, 96))
    canvas = Image.new("L", (size * 2, size * 2), 255)
    ImageDraw.Draw(canvas).text((size // 2, size // 3), character, font=ImageFont.truetype(str(font), size), fill=0)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), fillcolor=255, resample=Image.Resampling.BILINEAR)
    return np.asarray(canvas, dtype=np.float32)


def restroked(page: Upload, rng: np.random.Generator) -> Upload:
    """The glyph's skeleton drawn again with a round pen of random width: a handwritten-looking letter."""
    from skimage.morphology import dilation, disk, skeletonize

    skeleton = skeletonize(page < 128)
    pen = dilation(skeleton, disk(int(rng.integers(1, 4))))
    return np.where(pen, 0.0, 255.0).astype(np.float32)


def letters(fonts: list[Path], rng: np.random.Generator, count: int, stroke_fraction: float = 0.0,
            characters: str = CHARACTERS) -> list[Upload]:
    pages = []
    for _ in range(count):
        page = glyph(fonts[rng.integers(len(fonts))], characters[rng.integers(len(characters))], rng)
        pages.append(restroked(page, rng) if rng.random() < stroke_fraction else page)
    return pages


# photo crops -------------------------------------------------------------------------------------


def photo_crops(planes: list[np.ndarray], rng: np.random.Generator, count: int) -> list[Upload]:
    """Random square crops (48 px to half the image) of greyscale photographs in [0, 1]."""
    crops = []
    for _ in range(count):
        plane = planes[rng.integers(len(planes))]
        side = int(rng.integers(48, max(49, min(plane.shape) // 2)))
        top, left = rng.integers(0, plane.shape[0] - side + 1), rng.integers(0, plane.shape[1] - side + 1)
        crops.append((plane[top : top + side, left : left + side] * 255.0).astype(np.float32))
    return crops


# noise, scribbles, paper: one generator for training, another for the held-out set --------------


def _blank(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(40, 160)), int(rng.integers(40, 160))


def noise_training(rng: np.random.Generator) -> Upload:
    """Gaussian or uniform pixel noise, or sparse dark dots."""
    shape = _blank(rng)
    style = rng.integers(3)
    if style == 0:
        return np.clip(rng.normal(128, rng.uniform(20, 90), shape), 0, 255).astype(np.float32)
    if style == 1:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return np.where(rng.random(shape) < rng.uniform(0.01, 0.2), 0.0, 255.0).astype(np.float32)


def noise_held_out(rng: np.random.Generator) -> Upload:
    """Salt-and-pepper noise, or smooth blotches (blurred noise)."""
    shape = _blank(rng)
    if rng.random() < 0.5:
        page = np.full(shape, 200.0)
        speckle = rng.random(shape)
        page[speckle < 0.08] = 0.0
        page[speckle > 0.92] = 255.0
        return page.astype(np.float32)
    blurred = Image.fromarray(rng.uniform(0, 255, shape).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
    page = np.asarray(blurred, dtype=np.float32)
    return (page - page.min()) / max(1.0, float(np.ptp(page))) * 255.0


def scribble_training(rng: np.random.Generator) -> Upload:
    """A tangle of 3-6 random quadratic curves with one pen."""
    width, height = _blank(rng)
    canvas = Image.new("L", (width, height), 255)
    pen = ImageDraw.Draw(canvas)
    stroke = int(rng.integers(2, 7))
    for _ in range(int(rng.integers(3, 7))):
        start, control, end = (rng.uniform(0, 1, 2) * (width, height) for _ in range(3))
        t = np.linspace(0, 1, 24)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        pen.line([tuple(p) for p in points], fill=0, width=stroke, joint="curve")
    return np.asarray(canvas, dtype=np.float32)


def scribble_held_out(rng: np.random.Generator) -> Upload:
    """A random walk with momentum: a pen wandering over the page."""
    width, height = _blank(rng)
    canvas = Image.new("L", (width, height), 255)
    heading, position = rng.uniform(0, 2 * np.pi), np.array([width / 2, height / 2])
    points = [tuple(position)]
    for _ in range(int(rng.integers(40, 120))):
        heading += rng.normal(0, 0.6)
        position = np.clip(position + 3 * np.array([np.cos(heading), np.sin(heading)]), 0, (width - 1, height - 1))
        points.append(tuple(position))
    ImageDraw.Draw(canvas).line(points, fill=int(rng.integers(0, 80)), width=int(rng.integers(1, 6)))
    return np.asarray(canvas, dtype=np.float32)


def paper_training(rng: np.random.Generator) -> Upload:
    """Light paper with fibres: a low-contrast texture of short faint strokes."""
    width, height = _blank(rng)
    canvas = Image.new("L", (width, height), int(rng.integers(200, 250)))
    pen = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(5, 40))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        pen.line([(x, y), (x + rng.normal(0, 8), y + rng.normal(0, 8))], fill=int(rng.integers(120, 200)), width=1)
    return np.asarray(canvas, dtype=np.float32)


def paper_held_out(rng: np.random.Generator) -> Upload:
    """Crumpled paper: smooth shading and grain under a lighting gradient."""
    height, width = _blank(rng)
    rows, cols = np.mgrid[0:height, 0:width]
    light = 220 + 25 * (cols / width - 0.5) * rng.uniform(-1, 1) + 25 * (rows / height - 0.5) * rng.uniform(-1, 1)
    folds = Image.fromarray(rng.uniform(0, 255, (height, width)).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(3, 10)))
    shading = (np.asarray(folds, dtype=np.float32) - 128) * rng.uniform(0.1, 0.5)
    return np.clip(light + shading + rng.normal(0, 4, (height, width)), 0, 255).astype(np.float32)


# the two sets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """What one side of the split draws from."""

    fonts: list[Path]
    planes: list[np.ndarray]  # greyscale photographs in [0, 1]
    noise: Callable[[np.random.Generator], Upload]
    scribble: Callable[[np.random.Generator], Upload]
    paper: Callable[[np.random.Generator], Upload]
    stroke_fraction: float  # share of letters re-stroked like handwriting
    characters: str = CHARACTERS


def uploads(sources: Sources, per_kind: int, seed: int) -> dict[str, list[Upload]]:
    """`per_kind` uploads of every kind, seeded."""
    rng = np.random.default_rng(seed)
    found = {"letters": letters(sources.fonts, rng, per_kind, sources.stroke_fraction, sources.characters) if sources.fonts else [],
             "photos": photo_crops(sources.planes, rng, per_kind) if sources.planes else []}
    for kind, make in (("noise", sources.noise), ("scribbles", sources.scribble), ("paper", sources.paper)):
        found[kind] = [make(rng) for _ in range(per_kind)]
    return found


def frames(pages: list[Upload]) -> tuple[np.ndarray, int]:
    """(the uploads the served preprocessing accepts, in MNIST layout (N, 28, 28) float32; how many it rejects as blank)."""
    accepted, rejected = [], 0
    for page in pages:
        try:
            accepted.append(digits.to_mnist_layout(page))
        except InputError:
            rejected += 1
    return (np.stack(accepted) if accepted else np.zeros((0, 28, 28), np.float32)), rejected


def held_out_sources() -> Sources:
    from modelcore.denoise_data import load_test_images

    return Sources(font_files(held_out=True), list(load_test_images().values()), noise_held_out, scribble_held_out,
                   paper_held_out, stroke_fraction=0.5)


HELD_OUT_SEED = 20261129
