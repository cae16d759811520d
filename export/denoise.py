"""Export the denoiser to ONNX, verify it, and evaluate it against classical filters on the test images.

    python -m export.denoise --checkpoint runs/denoise/checkpoint.pt --out artifacts/denoise

Writes model.onnx (dynamic batch, height and width; inputs `noisy` (B, 1, H, W) in [0, 1] with H, W
even, and `sigma` (B, 1) on the 0-255 scale; output `denoised`, clamped to [0, 1]), metadata.json,
MODEL_CARD.md with the PSNR/SSIM table, and evaluation.png (crops: noisy / NL-means / model / clean).
Every method sees the same noisy pixels (modelcore.denoise_data, seeded). The model runs through the
same tiling code the service uses, blind (noise level estimated) and with the true level as a hint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export import onnx_export
from modelcore.card import MODEL_FILE, ModelMetadata, TensorSpec, file_sha256, levers_section
from modelcore.denoise import (
    MAX_SIGMA,
    ORIENTATIONS,
    SINGLE_PASS,
    add_noise,
    estimate_sigma,
    from_tiles,
    oriented,
    psnr,
    self_ensemble,
    to_tiles,
)
from modelcore.denoise_data import TARGET_MARGINS, TEST_SIGMAS, noisy_test_set
from training.common import git_commit, load_checkpoint
from training.denoise import grey
from training.networks import Denoiser

ATOL, RTOL = 1e-4, 1e-3
FIGURE_FILE = "evaluation.png"
NLM_FACTORS = (0.6, 0.8, 1.0, 1.2, 1.4)
# What the service averages (metadata preprocessing.self_ensemble): +0.05-0.08 dB for twice one pass's compute,
# within the 2x latency budget; all four orientations gain ~0.05 dB more at twice that again.
SHIPPED_ENSEMBLE = ("identity", "rot180")
SELF_ENSEMBLE_METHOD = ("the mean of the network's outputs on the tiles in each orientation listed in self_ensemble, each "
                        "turned back (modelcore.denoise.ORIENTATIONS)")
TILING = ("as few square tiles (at most 512x512, each just big enough) as cover the plane, with 24-pixel overlaps "
          "(the network's receptive radius): modelcore.denoise.tiling_for")
TV_WEIGHTS = (0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24)


class Clamped(torch.nn.Module):
    """The served graph: the denoiser with its output clamped to the valid range."""

    def __init__(self, denoiser: torch.nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoiser(noisy, sigma).clamp(0.0, 1.0)


class OnnxDenoiser:
    """The exported model on whole planes, through the service's tiling and self-ensemble (modelcore.denoise)."""

    def __init__(self, path: Path, threads: int = 0, calibration: dict | None = None,
                 orientations: tuple[str, ...] = SINGLE_PASS):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.calibration = calibration
        self.orientations = orientations

    def __call__(self, plane: np.ndarray, sigma: float | None = None) -> np.ndarray:
        feeds, tiling, grid = to_tiles(plane, sigma, calibration=self.calibration)
        passes = len(self.orientations)
        outputs = self.session.run(None, {"noisy": oriented(feeds["noisy"], self.orientations),
                                          "sigma": np.tile(feeds["sigma"], (passes, 1))})[0]
        return from_tiles(self_ensemble(outputs, feeds["noisy"], self.orientations), tiling, grid, plane.shape)


def export_graph(served: torch.nn.Module, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    half_height, half_width = torch.export.Dim("half_height", min=4, max=4096), torch.export.Dim("half_width", min=4, max=4096)
    onnx_export.export(
        served,
        (torch.rand(2, 1, 64, 96), torch.full((2, 1), 25.0)),
        path,
        input_names=["noisy", "sigma"],
        output_names=["denoised"],
        dynamic_shapes={"noisy": {0: batch, 2: 2 * half_height, 3: 2 * half_width}, "sigma": {0: batch}},
    )


@torch.no_grad()
def parity(served: torch.nn.Module, path: Path, images: dict[str, np.ndarray]) -> dict:
    """PyTorch vs onnxruntime on two test images at two sizes each (a 128x192 crop and the whole image)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    cases = []
    for name in list(images)[:2]:
        clean = images[name]
        for crop in (clean[:128, :192], clean[: clean.shape[0] // 2 * 2, : clean.shape[1] // 2 * 2]):
            noisy = crop[None, None].astype(np.float32)
            sigma = np.array([[25.0]], dtype=np.float32)
            expected = served(torch.from_numpy(noisy), torch.from_numpy(sigma)).numpy()
            actual = session.run(None, {"noisy": noisy, "sigma": sigma})[0]
            torch.testing.assert_close(torch.from_numpy(actual), torch.from_numpy(expected), atol=ATOL, rtol=RTOL)
            worst = max(worst, float(np.abs(actual - expected).max()))
            cases.append(f"{name} {crop.shape[0]}x{crop.shape[1]}")
    print(f"parity on {', '.join(cases)}: max |onnx - torch| = {worst:.2e}")
    return {"cases": cases, "max_abs_diff": worst, "tolerance": {"atol": ATOL, "rtol": RTOL}}


def tuning_crops() -> list[np.ndarray]:
    """Training-side photographs (never the test images) on which the classical filters are tuned."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [grey(image) for image in load_sample_images().images] + [grey(skimage.data.stereo_motorcycle()[0])]
    return [photo[100:356, 100:356] for photo in photos]


def tune_baselines(sigma: float) -> dict[str, float]:
    """Best NL-means h factor (x estimated sigma) and TV weight at this noise level, on the tuning crops."""
    from skimage.restoration import denoise_tv_chambolle

    rng = np.random.default_rng([7, int(sigma)])
    pairs = [(crop, add_noise(crop, sigma, rng)) for crop in tuning_crops()]

    def mean_psnr(method) -> float:
        return float(np.mean([psnr(clean, method(noisy)) for clean, noisy in pairs]))

    factor = max(NLM_FACTORS, key=lambda k: mean_psnr(lambda x: nl_means(x, k)))
    weight = max(TV_WEIGHTS, key=lambda w: mean_psnr(lambda x: denoise_tv_chambolle(x, weight=w)))
    return {"nlm_h_factor": factor, "tv_weight": weight}


def nl_means(noisy: np.ndarray, h_factor: float) -> np.ndarray:
    """scikit-image non-local means with h = h_factor x the blind noise estimate."""
    from skimage.restoration import denoise_nl_means

    level = _blind_sigma(noisy)
    return denoise_nl_means(noisy, h=h_factor * level, sigma=level, patch_size=5, patch_distance=6, fast_mode=True)


CALIBRATE_ABOVE = 35.0  # below, the blind estimate is close on test-like images; above, clipping makes it read low
CALIBRATION_SIGMAS = np.arange(0.0, 62.5, 2.5)


def fit_sigma_calibration(seed: int = 0) -> dict:
    """True noise level as a function of the blind estimate, fitted (isotonic) on training-side images only:
    crops of the denoiser's training planes and photographs with noise added, clipped and quantised like an upload."""
    from sklearn.isotonic import IsotonicRegression

    from training.denoise import all_planes
    from training.photos import photos_dir

    rng = np.random.default_rng(seed)
    planes = [plane[:256, :256] for plane in all_planes(photos_dir(None))[0] if min(plane.shape) >= 128][::2]
    pairs = [(estimate_sigma(add_noise(plane, sigma, rng)), sigma) for sigma in CALIBRATION_SIGMAS for plane in planes]
    estimates, truths = np.array(pairs).T
    fitted = IsotonicRegression(out_of_bounds="clip").fit(estimates, truths)
    grid = np.arange(CALIBRATE_ABOVE, MAX_SIGMA + 1.0, 1.0)
    sigmas = np.maximum(grid, fitted.predict(grid))  # a correction upwards only: the bias it corrects is one-sided
    return {"above": CALIBRATE_ABOVE, "estimates": grid.round(2).tolist(), "sigmas": sigmas.round(2).tolist(),
            "fitted_on": f"{len(planes)} training-side crops x {len(CALIBRATION_SIGMAS)} noise levels (0-60), seed {seed}"}


def reevaluate(directory: Path, orientations: tuple[str, ...] | None = None, refit_calibration: bool = False) -> ModelMetadata:
    """Re-evaluate an exported model with its serving settings changed (a refitted blind noise-level calibration,
    another self-ensemble) on the test images, and rewrite its metadata, card, figure and timing (the ONNX file is
    unchanged)."""
    metadata = ModelMetadata.read(directory)
    calibration = fit_sigma_calibration() if refit_calibration else metadata.preprocessing.get("sigma_calibration")
    orientations = orientations or tuple(metadata.preprocessing.get("self_ensemble", SINGLE_PASS))
    model = OnnxDenoiser(directory / MODEL_FILE, calibration=calibration, orientations=orientations)
    model_methods = ("model_blind", "model_sigma_hint")
    rows = [row for row in metadata.metrics["per_image"] if row["method"] not in model_methods]
    for sigma in TEST_SIGMAS:
        for name, (clean, noisy) in noisy_test_set(sigma).items():
            rows.append({"sigma": sigma, "image": name, "method": "model_blind", **scores(clean, model(noisy))})
            rows.append({"sigma": sigma, "image": name, "method": "model_sigma_hint", **scores(clean, model(noisy, sigma))})
    order = list(dict.fromkeys(row["method"] for row in metadata.metrics["per_image"]))
    rows.sort(key=lambda row: (row["sigma"], order.index(row["method"])))
    metadata.preprocessing.update(sigma_calibration=calibration, self_ensemble=list(orientations), tiling=TILING,
                                  self_ensemble_method=SELF_ENSEMBLE_METHOD)
    metadata.metrics.update(per_image=rows, summary=summarise(rows), timing=time_512(directory / MODEL_FILE, orientations))
    figure(model, directory / FIGURE_FILE, h_factor=metadata.metrics["tuned_baselines"]["25.0"]["nlm_h_factor"])
    metadata.export["reevaluated"] = {"commit": git_commit(), "command": " ".join(["python -m export.denoise", *sys.argv[1:]])}
    metadata.write(directory, card_extra=psnr_section(metadata.metrics["summary"], metadata.metrics.get("levers")))
    print(table(metadata.metrics["summary"]))
    return metadata


def scores(clean: np.ndarray, output: np.ndarray) -> dict:
    from skimage.metrics import structural_similarity

    return {"psnr": psnr(clean, output), "ssim": float(structural_similarity(clean, np.clip(output, 0, 1), data_range=1.0))}


def psnr_section(summary: dict, levers: list[dict] | None = None) -> str:
    """The card's evaluation section, and the log of quality levers measured one at a time (metrics.levers)."""
    section = "## PSNR / SSIM on the seven test images (mean)\n\n" + table(summary) + f"\n\n![crops]({FIGURE_FILE})\n"
    return section + ("\n" + levers_section(levers) if levers else "")


def _blind_sigma(noisy: np.ndarray) -> float:
    """The noise level NL-means is given, in [0, 1] units: the same estimate the model uses when blind."""
    return estimate_sigma(noisy) / 255.0


def evaluate(model: OnnxDenoiser) -> tuple[list[dict], dict]:
    """PSNR/SSIM of every method on every test image at every sigma; plus the tuned baseline settings."""
    from skimage.restoration import denoise_tv_chambolle

    rows, tuned = [], {}
    for sigma in TEST_SIGMAS:
        tuned[sigma] = settings = tune_baselines(sigma)
        for name, (clean, noisy) in noisy_test_set(sigma).items():
            outputs = {
                "noisy": noisy,
                "nl_means": nl_means(noisy, settings["nlm_h_factor"]),
                "tv": denoise_tv_chambolle(noisy, weight=settings["tv_weight"]),
                "model_blind": model(noisy),
                "model_sigma_hint": model(noisy, sigma),
            }
            for method, output in outputs.items():
                rows.append({"sigma": sigma, "image": name, "method": method, **scores(clean, output)})
    return rows, tuned


def summarise(rows: list[dict]) -> dict:
    """Mean PSNR/SSIM per sigma and method, and the model's margin over NL-means."""
    summary = {}
    for sigma in TEST_SIGMAS:
        per_method = {}
        for method in dict.fromkeys(row["method"] for row in rows):
            picked = [row for row in rows if row["sigma"] == sigma and row["method"] == method]
            per_method[method] = {"psnr": float(np.mean([r["psnr"] for r in picked])), "ssim": float(np.mean([r["ssim"] for r in picked]))}
        per_method["blind_minus_nl_means_db"] = per_method["model_blind"]["psnr"] - per_method["nl_means"]["psnr"]
        summary[f"sigma_{int(sigma)}"] = per_method
    return summary


def table(summary: dict) -> str:
    methods = [m for m in summary[f"sigma_{int(TEST_SIGMAS[0])}"] if isinstance(summary[f"sigma_{int(TEST_SIGMAS[0])}"][m], dict)]
    header = "| sigma | " + " | ".join(methods) + " | model (blind) - NL-means |\n|---" * 1 + "|---" * (len(methods) + 1) + "|"
    lines = [header]
    for key, per_method in summary.items():
        cells = " | ".join(f"{per_method[m]['psnr']:.2f} dB / {per_method[m]['ssim']:.3f}" for m in methods)
        lines.append(f"| {key.split('_')[1]} | {cells} | {per_method['blind_minus_nl_means_db']:+.2f} dB |")
    verdicts = [f"sigma {key.split('_')[1]}: {summary[key]['blind_minus_nl_means_db']:+.2f} dB vs target {target:+.1f} dB "
                f"({'met' if summary[key]['blind_minus_nl_means_db'] >= target else 'NOT met'})"
                for key, target in TARGET_MARGINS.items()]
    return "\n".join(lines) + "\n\nTargets (model blind minus NL-means): " + "; ".join(verdicts) + "."


def figure(model: OnnxDenoiser, path: Path, h_factor: float, sigma: float = 25.0) -> None:
    """Crops of three test images: noisy / NL-means / model (blind) / clean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    chosen = ["camera", "astronaut", "coffee"]
    test_set = noisy_test_set(sigma)
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 3 * len(chosen)))
    for row, name in enumerate(chosen):
        clean, noisy = test_set[name]
        panels = {"noisy": noisy, "NL-means": nl_means(noisy, h_factor), "model (blind)": model(noisy), "clean": clean}
        for col, (title, image) in enumerate(panels.items()):
            crop = image[100:228, 150:278]
            axes[row, col].imshow(crop, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(f"{name}: {title}" + ("" if title == "clean" else f" {psnr(clean, image):.2f} dB"), fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle(f"Gaussian noise sigma {sigma:g} (0-255 scale), 128x128 crops")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def time_512(path: Path, orientations: tuple[str, ...]) -> dict:
    """Seconds for one 512x512 greyscale image through onnxruntime (service tiling and self-ensemble), 1 and 2 threads."""
    plane = noisy_test_set(25.0)["camera"][1]
    timings = {"passes": len(orientations)}
    for threads in (1, 2):
        model = OnnxDenoiser(path, threads, orientations=orientations)
        model(plane)
        started = time.perf_counter()
        for _ in range(3):
            model(plane)
        timings[f"seconds_512x512_{threads}_thread{'s' if threads > 1 else ''}"] = round((time.perf_counter() - started) / 3, 3)
    return timings


# How the tests export their one-batch model: quick evaluation.
DRY_RUN_OPTIONS = {"quick": True}


def run(checkpoint: Path, out: Path, quick: bool = False, orientations: tuple[str, ...] = SHIPPED_ENSEMBLE) -> ModelMetadata:
    """Export, verify and evaluate (served as the mean over `orientations`); `quick` skips the test-set evaluation
    (for tests)."""
    model_config, state_dict, trained = load_checkpoint(checkpoint)
    denoiser = Denoiser(**model_config)
    denoiser.load_state_dict(state_dict)
    served = Clamped(denoiser).eval()
    with onnx_export.staged(out) as staging:
        path = staging / MODEL_FILE
        export_graph(served, path)
        checked = parity(served, path, {name: clean for name, (clean, _) in noisy_test_set(25.0).items()})
        calibration = None if quick else fit_sigma_calibration()
        model = OnnxDenoiser(path, calibration=calibration, orientations=orientations)
        metrics, extra = {"timing": time_512(path, orientations)}, ""
        if not quick:
            rows, tuned = evaluate(model)
            metrics.update(summary=summarise(rows), per_image=rows, tuned_baselines={str(k): v for k, v in tuned.items()})
            extra = psnr_section(metrics["summary"])
            figure(model, staging / FIGURE_FILE, h_factor=tuned[25.0]["nlm_h_factor"])  # the tuning evaluate() did
            print(table(metrics["summary"]))
        print(f"timing: {metrics['timing']}")
        metadata = describe(trained, model_config, checked, metrics, path)
        metadata.preprocessing["self_ensemble"] = list(orientations)
        if calibration:
            metadata.preprocessing["sigma_calibration"] = calibration
        metadata.write(staging, card_extra=extra)
    print(f"wrote {out / MODEL_FILE}, version {metadata.version}")
    return metadata


def describe(trained: dict, model_config: dict, checked: dict, metrics: dict, path: Path) -> ModelMetadata:
    sha256 = file_sha256(path)
    return ModelMetadata(
        name="denoise",
        version=sha256[:12],
        task="image-denoising",
        summary="Gaussian-noise image denoiser (FFDNet-style residual CNN with a noise-level map), any image size.",
        inputs=[TensorSpec(name="noisy", shape=["batch", 1, "height", "width"], dtype="float32",
                           description="one greyscale plane in [0, 1]; height and width even", example_shape=[1, 1, 64, 64]),
                TensorSpec(name="sigma", shape=["batch", 1], dtype="float32",
                           description="noise standard deviation on the 0-255 scale (estimated when the caller gives none)")],
        outputs=[TensorSpec(name="denoised", shape=["batch", 1, "height", "width"], dtype="float32", description="in [0, 1]")],
        preprocessing={"function": "modelcore.denoise.to_tiles / from_tiles",
                       "colour": "each channel denoised as its own plane (alpha kept as is)",
                       "noise_level": "caller's hint, else Donoho's MAD estimate on the finest Haar diagonal band, "
                                      "corrected above 35 by sigma_calibration (fitted on training images)",
                       "tiling": TILING, "self_ensemble_method": SELF_ENSEMBLE_METHOD},
        data=trained["data"],
        training=dict(trained["training"], architecture="Denoiser (pixel-unshuffle, conv-BN-ReLU stack, residual)",
                      model_config=model_config),
        metrics={**metrics, "validation": trained["metrics"]["validation"]},
        export=dict(onnx_export.versions(), parity=checked, commit=git_commit(),
                    dynamic_axes={"noisy": {"0": "batch", "2": "height", "3": "width"}, "sigma": {"0": "batch"}},
                    command=" ".join(["python -m export.denoise", *sys.argv[1:]])),
        sha256=sha256,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/denoise/checkpoint.pt"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/denoise"))
    parser.add_argument("--quick", action="store_true", help="export and verify only, no test-set evaluation (for tests)")
    parser.add_argument("--self-ensemble", type=orientation_list, default=SHIPPED_ENSEMBLE, metavar="NAMES",
                        help=f"comma-separated orientations the service averages, of {', '.join(ORIENTATIONS)} "
                             f"(default {','.join(SHIPPED_ENSEMBLE)}; identity alone = one pass)")
    parser.add_argument("--reevaluate", type=Path, metavar="MODEL_DIR",
                        help="no export: re-evaluate an exported model with --self-ensemble (and --recalibrate)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="with --reevaluate: also refit the blind noise-level calibration")
    args = parser.parse_args()
    if args.reevaluate:
        reevaluate(args.reevaluate, args.self_ensemble, refit_calibration=args.recalibrate)
    else:
        run(args.checkpoint, args.out, args.quick, args.self_ensemble)


def orientation_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ORIENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown orientation(s) {unknown}; choose from {', '.join(ORIENTATIONS)}")
    return names


if __name__ == "__main__":
    main()
