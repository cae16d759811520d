"""PSNR of a running server's /denoise on the seven test images, beside the shipped card's NL-means figures.

    python -m loadtest.denoise_eval --url http://127.0.0.1:3000

Sends each noisy test image (sigma 15, 25, 50; the same seeded pixels the export evaluated) as an
8-bit PNG, blind (no noise-level hint), and measures the PSNR of the PNG that comes back.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from modelcore.card import ModelMetadata
from modelcore.denoise import psnr
from modelcore.denoise_data import TEST_SIGMAS, noisy_test_set

SHIPPED = Path(__file__).resolve().parent.parent / "artifacts" / "denoise"


def png(plane: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(plane, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def served_psnr(url: str, sigma: float) -> dict[str, float]:
    """image name -> PSNR (dB) of the served, blind denoising at this sigma."""
    scores = {}
    with httpx.Client(base_url=url, timeout=300) as client:
        for name, (clean, noisy) in noisy_test_set(sigma).items():
            response = client.post("/denoise", files={"image": (f"{name}.png", png(noisy), "image/png")})
            response.raise_for_status()
            scores[name] = psnr(clean, np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.float64) / 255.0)
    return scores


def evaluate(url: str, card: ModelMetadata) -> dict:
    """Mean served PSNR per sigma, with the card's NL-means and noisy-input means, and the margin."""
    report = {}
    for sigma in TEST_SIGMAS:
        key = f"sigma_{int(sigma)}"
        served = float(np.mean(list(served_psnr(url, sigma).values())))
        reference = card.metrics["summary"][key]
        report[key] = {"served_model_psnr": served, "nl_means_psnr": reference["nl_means"]["psnr"],
                       "noisy_psnr": reference["noisy"]["psnr"], "margin_db": served - reference["nl_means"]["psnr"]}
    return report


def bm3d_reference(report: dict) -> None:
    """Add BM3D given the true sigma (its best case) to the report, image by image, and the served model's margin.

    A reference for evaluation only: `pip install bm3d` (its licence is non-commercial; it is never served).
    """
    import bm3d

    for sigma in TEST_SIGMAS:
        key = f"sigma_{int(sigma)}"
        scores = {name: psnr(clean, np.clip(bm3d.bm3d(noisy, sigma_psd=sigma / 255.0), 0, 1))
                  for name, (clean, noisy) in noisy_test_set(sigma).items()}
        report[key]["bm3d_true_sigma_psnr"] = float(np.mean(list(scores.values())))
        report[key]["served_minus_bm3d_db"] = report[key]["served_model_psnr"] - report[key]["bm3d_true_sigma_psnr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--card", type=Path, default=SHIPPED, help="exported model directory with the NL-means figures")
    parser.add_argument("--bm3d", action="store_true", help="also BM3D given the true sigma (pip install bm3d; slow)")
    args = parser.parse_args()
    report = evaluate(args.url, ModelMetadata.read(args.card))
    if args.bm3d:
        bm3d_reference(report)
    print(json.dumps(report, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
