"""In-process speed of exported sentiment models side by side: one text per call, as a user's single request.

    python -m loadtest.sentiment_speed artifacts/sentiment DIR [DIR ...] [--rounds 5] [--texts 400] [--threads 1]

Each DIR holds a model.onnx and its tokenizer.json (an artifacts/sentiment of any commit). The models take turns
over the same held-out test tweets, round after round, so a busy machine slows them alike; prints the median and
min/max texts per second of each. For a new model's "same speed" claim; the server-level figures come from
loadtest.benchmark.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelcore.card import MODEL_FILE
from modelcore.sentiment import TOKENIZER_FILE, Encoded, TextEncoder
from modelcore.sentiment_corpus import load_splits

MAX_LENGTH = 64


def one_text_feeds(directory: Path, texts: list[str]) -> list[Encoded]:
    encoder = TextEncoder(directory / TOKENIZER_FILE, MAX_LENGTH)
    return [encoder.encode([text]) for text in texts]


def texts_per_second(session: ort.InferenceSession, feeds: list[Encoded]) -> float:
    started = time.perf_counter()
    for encoded in feeds:
        session.run(None, {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
    return len(feeds) / (time.perf_counter() - started)


def compare(directories: list[Path], rounds: int, count: int, threads: int) -> dict[str, list[float]]:
    """Texts per second of each model in each round, the models interleaved."""
    splits, _ = load_splits()
    texts = splits["test"].texts[:count]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    models = {str(d): (ort.InferenceSession(str(d / MODEL_FILE), options, providers=["CPUExecutionProvider"]),
                       one_text_feeds(d, texts)) for d in directories}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, (session, feeds) in models.items():
            rates[name].append(texts_per_second(session, feeds))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=400, help="test tweets per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for name, rates in compare(args.directories, args.rounds, args.texts, args.threads).items():
        print(f"{name}: median {np.median(rates):.1f} texts/s (min {min(rates):.1f}, max {max(rates):.1f}) over {args.rounds} rounds")


if __name__ == "__main__":
    main()
