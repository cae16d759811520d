"""The natural images the image models train on, shared by the denoiser (its training data) and the digit
classifier (photographs it learns are not digits): scikit-image's sample images, and the folder of photographs
(../shared/data/photos, or --photos / $DENOISE_PHOTOS_DIR) with its provenance and credits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# skimage.data loaders that need no network. `cat` is chelsea under another name: excluded with it.
TRAIN_IMAGES = ("brick", "grass", "gravel", "cell", "clock", "retina", "hubble_deep_field", "immunohistochemistry",
                "page", "text", "horse", "microaneurysms", "stereo_motorcycle", "lfw_subset")
PHOTOS_ENV = "DENOISE_PHOTOS_DIR"
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
# Whole photographs held out for validation: overlapping panorama pairs stay together on one side of the split.
VALIDATION_PHOTOS = ("opencv-doc__aero1", "opencv-doc__aero3", "opencv-doc__leuvenA", "opencv-doc__leuvenB",
                     "opencv-doc__fruits", "lomiri-wallpapers-16.04__sunset_by_Aitzol_Berasategi")
# Stored at native size from JPEG quality 75-79: halved, so the network does not learn to keep 8x8 block artefacts.
BLOCKY_PHOTOS = ("opencv-doc__aero1", "opencv-doc__aero3", "opencv-doc__board", "opencv-doc__building",
                 "opencv-doc__butterfly", "opencv-doc__home")


def grey(image: np.ndarray) -> np.ndarray:
    """Any skimage/sklearn image -> float64 greyscale plane in [0, 1]."""
    from skimage.color import rgb2gray, rgba2rgb

    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.float64)
    elif image.dtype == np.uint8:
        image = image / 255.0
    if image.ndim == 3 and image.shape[-1] == 4:
        image = rgba2rgb(image)
    return rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)


def photos_dir(requested: Path | None) -> Path | None:
    """The photographs folder: the flag, else $DENOISE_PHOTOS_DIR, else ../shared/data/photos when present."""
    chosen = requested or (Path(os.environ[PHOTOS_ENV]) if os.environ.get(PHOTOS_ENV) else None)
    if chosen is None:
        return SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else None
    if not chosen.is_dir():
        raise FileNotFoundError(f"photos folder {chosen} does not exist (--photos or ${PHOTOS_ENV})")
    return chosen


def photo_planes(directory: Path, validation: bool) -> list[np.ndarray]:
    """Each photograph (training or validation side) as its grey plane plus its R, G and B planes."""
    from PIL import Image

    planes = []
    for path in sorted(directory.glob("*.png")):
        if (path.stem in VALIDATION_PHOTOS) != validation:
            continue
        image = Image.open(path).convert("RGB")
        if path.stem in BLOCKY_PHOTOS:
            image = image.reduce(2)
        rgb = np.asarray(image)
        planes += [grey(rgb)] + [rgb[..., channel] / 255.0 for channel in range(3)]
    return planes


def photo_provenance(directory: Path | None) -> dict | None:
    """Which photographs trained (and validated) the model, with their SHA-256 (the folder's SHA256SUMS) and the
    credit each licence asks for (author, licence, source package: the folder's README table)."""
    if directory is None:
        return None
    sums = directory / "SHA256SUMS"
    hashes = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip()) if sums.exists() else {}
    files = sorted(path.name for path in directory.glob("*.png"))
    return {"files": {name: hashes.get(name, "") for name in files},
            "validation_files": [name for name in files if Path(name).stem in VALIDATION_PHOTOS],
            "halved_for_jpeg_blocks": list(BLOCKY_PHOTOS),
            "credits": photo_credits(directory / "README.md"),
            "modification": "downscaled (longer side at most 1024 px) and re-encoded as PNG by the data set's maker; "
                            "converted to greyscale and cropped into patches for training"}


def photo_credits(readme: Path) -> list[dict]:
    """Per-file author, licence and source package, from the photographs' README table."""
    if not readme.exists():
        return []
    credits = []
    for line in readme.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].endswith(".png"):
            credits.append({"file": cells[0], "package": cells[1], "author": cells[3], "licence": cells[4]})
    return credits
