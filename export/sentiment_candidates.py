"""Sentiment quality levers measured side by side on the fixed validation and test splits.

    python -m export.sentiment_candidates artifacts/sentiment runs/sentiment-seed1/checkpoint.pt ...

Each candidate is an exported model directory (its model.onnx, as served) or a training checkpoint (PyTorch,
fp32). For every candidate alone, for the mean of all candidates' probabilities (a seed ensemble) and for the
weight average of the checkpoints (a "soup", when two or more are given), prints validation and test macro-F1,
and the same after per-class offsets on the log-probabilities chosen on the validation split (the test split
only scores what validation chose). Test macro-F1 per source shows where each candidate is weak.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from export.sentiment import load_classifier, onnx_probabilities
from modelcore.card import MODEL_FILE
from modelcore.sentiment import LABELS, TOKENIZER_FILE, Encoded, TextEncoder
from modelcore.sentiment_corpus import Split, load_splits
from training.networks import SentimentNet
from training.sentiment import encoder_dir, predict_probabilities

SPLITS = ("validation", "test")
MAX_LENGTH = 64  # tokens, as the shipped recipe (training --max-length) and the shipped card
OFFSETS = np.round(np.arange(-1.0, 1.0001, 0.05), 2)  # added to log p(neutral) and log p(positive)


def macro_f1(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(f1_score(labels, probabilities.argmax(axis=1), average="macro", labels=range(len(LABELS))))


def soup(paths: list[Path]) -> SentimentNet:
    """One model whose weights are the mean of the checkpoints' (same encoder, same head shape)."""
    models = [load_classifier(path)[0] for path in paths]
    states = [model.state_dict() for model in models]
    averaged = {key: torch.stack([state[key].float() for state in states]).mean(0).to(states[0][key].dtype) for key in states[0]}
    models[0].load_state_dict(averaged)
    return models[0]


def probabilities_of(candidate: Path | SentimentNet, encoded: dict[str, Encoded]) -> dict[str, np.ndarray]:
    """Validation and test probabilities of one candidate."""
    if isinstance(candidate, Path) and candidate.is_dir():
        return {name: onnx_probabilities(candidate / MODEL_FILE, encoded[name]) for name in SPLITS}
    model = load_classifier(candidate)[0] if isinstance(candidate, Path) else candidate
    return {name: predict_probabilities(model, encoded[name]) for name in SPLITS}


def offsets_from_validation(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The per-class log-probability offsets (negative fixed at 0) with the best validation macro-F1."""
    logs = np.log(np.clip(probabilities, 1e-9, None))
    best = max(itertools.product(OFFSETS, OFFSETS),
               key=lambda pair: (macro_f1(labels, logs + np.array([0.0, *pair])), -abs(pair[0]) - abs(pair[1])))
    return np.array([0.0, *best])


def figures(probabilities: dict[str, np.ndarray], splits: dict[str, Split]) -> dict:
    """Macro-F1 on validation and test, as is and with validation-chosen offsets; test macro-F1 per source."""
    labels = {name: splits[name].labels for name in SPLITS}
    offsets = offsets_from_validation(labels["validation"], probabilities["validation"])
    shifted = {name: np.log(np.clip(probabilities[name], 1e-9, None)) + offsets for name in SPLITS}
    test = splits["test"]
    return {
        "validation_macro_f1": macro_f1(labels["validation"], probabilities["validation"]),
        "test_macro_f1": macro_f1(labels["test"], probabilities["test"]),
        "test_accuracy": float((probabilities["test"].argmax(1) == labels["test"]).mean()),
        "offsets_from_validation": offsets[1:].tolist(),
        "validation_macro_f1_offset": macro_f1(labels["validation"], shifted["validation"]),
        "test_macro_f1_offset": macro_f1(labels["test"], shifted["test"]),
        "test_macro_f1_by_source": {source: round(macro_f1(test.labels[test.sources == source], probabilities["test"][test.sources == source]), 4)
                                    for source in dict.fromkeys(test.sources.tolist())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path, help="exported model directories or checkpoint.pt files")
    parser.add_argument("--out", type=Path, help="also write the report here as JSON")
    args = parser.parse_args()
    splits, _ = load_splits()
    text_encoder = TextEncoder(encoder_dir() / TOKENIZER_FILE, MAX_LENGTH)
    encoded = {name: text_encoder.encode(splits[name].texts) for name in SPLITS}
    each = {str(path): probabilities_of(path, encoded) for path in args.candidates}
    report = {name: figures(probabilities, splits) for name, probabilities in each.items()}
    if len(each) > 1:
        mean = {split: np.mean([probabilities[split] for probabilities in each.values()], axis=0) for split in SPLITS}
        report["ensemble (mean probabilities of all)"] = figures(mean, splits)
    checkpoints = [path for path in args.candidates if path.suffix == ".pt"]
    if len(checkpoints) > 1:
        report["soup (mean weights of the checkpoints)"] = figures(probabilities_of(soup(checkpoints), encoded), splits)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
