"""Does the server know when an upload is not a digit? Measured through a running server.

    python -m loadtest.ood_eval --url http://127.0.0.1:3000             # make eval-ood

Sends every held-out MNIST test digit and the held-out non-digits (modelcore.outliers: DejaVu letters and
symbols, crops of the seven test photographs, noise, scribbles, textured paper - none seen in training) as PNG
files to /digits/classify-image, and reports the AUROC of the answers' `ood_score` between digits and
non-digits (overall and per kind) and the share of each flagged `in_distribution: false`. An upload the server
refuses as blank (422, "no digit found") counts as flagged with score 1. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from loadtest.http_eval import post_all
from modelcore import mnist, outliers
from modelcore.images import png_bytes

PER_KIND = 500


def scored(url: str, pages: list[np.ndarray], concurrency: int) -> tuple[np.ndarray, np.ndarray]:
    """(ood_score, flagged) per upload; a refused (422) upload scores 1, flagged."""
    requests = [{"content": png_bytes(np.clip(page, 0, 255).astype(np.uint8)), "headers": {"content-type": "image/png"}}
                for page in pages]
    answers = post_all(url, "/digits/classify-image", requests, concurrency).answers
    scores = np.array([1.0 if answer is None else answer["ood_score"] for answer in answers])
    flagged = np.array([answer is None or not answer["in_distribution"] for answer in answers])
    return scores, flagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--per-kind", type=int, default=PER_KIND)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--data-dir", help=f"MNIST IDX directory (default: ${mnist.ENV_VAR})")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    test_digits = list(mnist.load("test", args.data_dir)[0].astype(np.float32))
    digit_scores, digit_flags = scored(args.url, test_digits, args.concurrency)
    report = {"mnist_test_n": len(digit_scores), "mnist_test_flagged": round(float(digit_flags.mean()), 4), "per_kind": {}}
    every = []
    held_out = outliers.uploads(outliers.held_out_sources(), args.per_kind, outliers.HELD_OUT_SEED)
    for kind, pages in held_out.items():
        scores, flags = scored(args.url, pages, args.concurrency)
        every.append(scores)
        truth = np.r_[np.zeros(len(digit_scores)), np.ones(len(scores))]
        report["per_kind"][kind] = {"n": len(scores), "flagged": round(float(flags.mean()), 4),
                                    "auroc": round(float(roc_auc_score(truth, np.r_[digit_scores, scores])), 4)}
    every = np.concatenate(every)
    truth = np.r_[np.zeros(len(digit_scores)), np.ones(len(every))]
    report["auroc_overall"] = round(float(roc_auc_score(truth, np.r_[digit_scores, every])), 4)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
