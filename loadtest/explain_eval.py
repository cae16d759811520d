"""Are the explanations faithful, and what do they cost? Measured through a running server.

    python -m loadtest.explain_eval --url http://127.0.0.1:3000            # make eval-explain
    python -m loadtest.explain_eval --url ... --only digits --digits 200

- digits: for held-out MNIST test digits, /digits/explain's heat map ranks the upload's ink pixels; erasing the
  top-ranked ink step by step (10 steps, up to half of the ink) and re-classifying each erased image through the
  server (the v2 `image` input: /digits/classify's preprocessing) gives the predicted digit's mean probability
  along the way (deletion AUC); the same for the same number of ink pixels erased in random order. Reports the
  ratio (lower = more faithful), and p50/p99 of one explanation at a time.
- sentiment: for held-out test tweets, removing the top-weighted 20% of words lowers the predicted label's
  probability by how much, against removing as many random words; and p50/p99 for a 25-word text.
- denoise: Spearman rank correlation, on 16x16 blocks of the seven test images, between /denoise/explain's
  uncertainty and the actual absolute error of /denoise's output, at sigma 15, 25 and 50.
Prints one JSON object; writes it to --out when given; with --record, also into each evaluated model's
metadata.json and MODEL_CARD.md under artifacts/ (the explanations section: method, cost, limits, figures).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from modelcore import mnist
from modelcore.images import png_bytes

STEPS = 10
SEED = 7
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
COMMAND = "make serve, then make eval-explain (python -m loadtest.explain_eval --url http://127.0.0.1:3000 --record)"
# What each explanation is, what it costs and where it stops meaning something: written to the model cards.
METHODS = {
    "digits": {
        "endpoint": "POST /digits/explain (multipart image; ?format=png for an overlay)",
        "method": "RISE: 128 random masks (14x14 cells, half kept, fixed seed) over the 28x28 model input; a pixel's "
                  "attribution is the predicted digit's mean probability when it is kept minus when it is removed; "
                  "pixels the model sees as blank get 0; mapped back onto the upload through the preprocessing's "
                  "crop and scale (maps downscaled for uploads over 256 px a side, with the scale in the answer)",
        "cost": "129 images through the CNN per explanation, in one batch",
        "limits": "relative values (compare pixels of one map, not maps); 2-pixel resolution on the model input, "
                  "blurred by the resize back to the upload; the mask sample adds noise (reproducible: fixed seed)",
        "faithfulness_test": "erase the map's top-ranked ink pixels in 10 steps up to half the ink, re-classify each "
                             "through the server; mean probability of the predicted digit (deletion AUC) vs the same "
                             "number of ink pixels erased at random, 1,000 held-out MNIST test digits",
    },
    "sentiment": {
        "endpoint": "POST /sentiment/explain ({\"texts\": [1 to 16 texts]})",
        "method": "leave-one-word-out occlusion: a word's weight is the drop in the predicted label's probability "
                  "when the text is classified without it; words are runs of letters/digits/apostrophes, and "
                  "punctuation or emoji runs, with character offsets into the input",
        "cost": "1 + (number of words) texts through the model per text, in one batch",
        "limits": "one word at a time: words that only matter together (\"not ... bad\") are underrated, and so are words that each carry the verdict alone (in \"I love this airline, best flight ever!\" removing \"love\" or \"best\" leaves the other: every weight is under 0.001); words outside "
                  "the 64-token window (the middle of a long text: its first 16 and last 46 tokens are read) weigh 0; INT8 dynamic quantisation adds about 0.001 of noise to weights",
        "faithfulness_test": "remove the top-weighted 20% of words vs as many random words (seeded) and re-classify "
                             "through the server; mean drop of the predicted label's probability, 500 held-out tweets",
    },
    "denoise": {
        "endpoint": "POST /denoise/explain (multipart image, optional sigma)",
        "method": "noise = input - output (what /denoise removes), as a PNG around 128; uncertainty = per-pixel "
                  "standard deviation of four passes (as given, flipped left-right, up-down, turned 180 degrees), "
                  "scaled to its own maximum; and whether each channel's noise level is within the trained range",
        "cost": "four passes of the network (four times /denoise's compute)",
        "limits": "disagreement between orientations is a proxy for error, not the error itself: it misses errors "
                  "all passes share (e.g. texture smoothed away the same way); maps are scaled per image",
        "faithfulness_test": "Spearman rank correlation between the uncertainty and the actual absolute error of "
                             "/denoise's output, on 16x16 blocks of the seven test images, at sigma 15, 25 and 50",
    },
}


def bytes_tensor(files: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A v2 request with the files as the binary BYTES input `image`, and its header."""
    raw = b"".join(len(data).to_bytes(4, "little") + data for data in files)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "probabilities"}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"}


def classify_many(client: httpx.Client, images: list[np.ndarray]) -> np.ndarray:
    body, headers = bytes_tensor([png_bytes(image.astype(np.uint8)) for image in images])
    response = client.post("/v2/models/digits/infer", content=body, headers=headers)
    response.raise_for_status()
    (output,) = response.json()["outputs"]
    return np.array(output["data"], dtype=np.float64).reshape(output["shape"])


def erased(upload: np.ndarray, order: np.ndarray, ink: int) -> list[np.ndarray]:
    """The upload with the first k/STEPS of half its ink erased, for k = 0..STEPS."""
    steps = []
    for k in range(STEPS + 1):
        flat = upload.ravel().copy()
        flat[order[: round(k * (ink // 2) / STEPS)]] = 0
        steps.append(flat.reshape(upload.shape))
    return steps


def digits_faithfulness(client: httpx.Client, count: int, data_dir: str | None) -> dict:
    images = mnist.load("test", data_dir)[0]
    rng = np.random.default_rng(SEED)
    chosen = rng.choice(len(images), count, replace=False)
    by_map, at_random, latencies = [], [], []
    for index in chosen:
        upload = images[index]
        started = time.perf_counter()
        answer = client.post("/digits/explain", files={"image": ("d.png", png_bytes(upload), "image/png")})
        latencies.append(time.perf_counter() - started)
        answer.raise_for_status()
        explained = answer.json()
        heat, label = np.array(explained["heatmap"]), explained["label"]
        ink = np.flatnonzero(upload.ravel() > 0)
        ranked = ink[np.argsort(-heat.ravel()[ink], kind="stable")]
        curves = classify_many(client, erased(upload, ranked, len(ink)) + erased(upload, rng.permutation(ink), len(ink)))
        by_map.append(curves[: STEPS + 1, label].mean())
        at_random.append(curves[STEPS + 1 :, label].mean())
    ms = np.array(latencies) * 1000
    return {"digits": count, "deletion_auc_map": round(float(np.mean(by_map)), 4),
            "deletion_auc_random": round(float(np.mean(at_random)), 4),
            "ratio": round(float(np.mean(by_map) / np.mean(at_random)), 3),
            "explain_ms_p50": round(float(np.percentile(ms, 50)), 1), "explain_ms_p99": round(float(np.percentile(ms, 99)), 1)}


def sentiment_faithfulness(client: httpx.Client, count: int) -> dict:
    from modelcore.sentiment_corpus import load_splits
    from service.models.explain import without_span

    texts = [text for text in load_splits()[0]["test"].texts if len(text.split()) >= 5]
    rng = np.random.default_rng(SEED)
    texts = [texts[i] for i in rng.choice(len(texts), count, replace=False)]
    drops_top, drops_random = [], []
    for start in range(0, len(texts), 16):
        batch = texts[start : start + 16]
        results = client.post("/sentiment/explain", json={"texts": batch}).raise_for_status().json()["results"]
        top_texts, random_texts, labels, originals = [], [], [], []
        for text, result in zip(batch, results):
            spans = [(token["start"], token["end"]) for token in result["tokens"]]
            k = max(1, math.ceil(0.2 * len(spans)))
            weights = np.array([token["weight"] for token in result["tokens"]])
            top_texts.append(removed(text, [spans[i] for i in np.argsort(-weights, kind="stable")[:k]], without_span))
            random_texts.append(removed(text, [spans[i] for i in rng.choice(len(spans), k, replace=False)], without_span))
            labels.append(result["label"])
            originals.append(result["probabilities"][result["label"]])
        after_top = client.post("/sentiment/classify", json={"texts": top_texts}).raise_for_status().json()["results"]
        after_random = client.post("/sentiment/classify", json={"texts": random_texts}).raise_for_status().json()["results"]
        for label, original, top, rand in zip(labels, originals, after_top, after_random):
            drops_top.append(original - top["probabilities"][label])
            drops_random.append(original - rand["probabilities"][label])
    latencies = sentiment_latency(client, texts)
    return {"texts": count, "mean_drop_top20": round(float(np.mean(drops_top)), 4),
            "mean_drop_random": round(float(np.mean(drops_random)), 4),
            "ratio": round(float(np.mean(drops_top) / max(np.mean(drops_random), 1e-9)), 2), **latencies}


def removed(text: str, spans: list[tuple[int, int]], without_span) -> str:
    """The text without the given words (removed right to left, so earlier offsets stay valid)."""
    for span in sorted(spans, reverse=True):
        text = without_span(text, span)
    return text or "."


def sentiment_latency(client: httpx.Client, texts: list[str], samples: int = 100) -> dict:
    """p50/p99 of one explanation of a 25-word text (held-out tweets joined to 25 words), one request at a time."""
    words = " ".join(texts).split()
    latencies = []
    for index in range(min(samples, len(words) // 25)):
        text = " ".join(words[index * 25 : index * 25 + 25])
        started = time.perf_counter()
        client.post("/sentiment/explain", json={"texts": [text]}).raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return {"explain_25_words_ms_p50": round(statistics.median(latencies), 1),
            "explain_25_words_ms_p99": round(float(np.percentile(latencies, 99)), 1)}


def decoded_map(answer: dict, key: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(answer[key])))
    scale = answer[f"{key}_scale"]
    return (np.asarray(image, dtype=np.float64) - scale["offset"]) / scale["gain"]


def denoise_uncertainty(client: httpx.Client) -> dict:
    from scipy.stats import spearmanr

    from loadtest.denoise_eval import png
    from modelcore.denoise_data import TEST_SIGMAS, noisy_test_set

    figures = {}
    for sigma in TEST_SIGMAS:
        per_image, pooled_u, pooled_e = [], [], []
        for name, (clean, noisy) in noisy_test_set(sigma).items():
            upload = {"image": (f"{name}.png", png(noisy), "image/png")}
            output = np.asarray(Image.open(io.BytesIO(client.post("/denoise", files=upload).raise_for_status().content)),
                                dtype=np.float64)
            uncertainty = decoded_map(client.post("/denoise/explain", files=upload).raise_for_status().json(), "uncertainty")
            error = np.abs(output - clean * 255.0)
            blocks_u, blocks_e = blocks(uncertainty), blocks(error)
            per_image.append(spearmanr(blocks_u, blocks_e).correlation)
            pooled_u.append(blocks_u / max(blocks_u.mean(), 1e-9))
            pooled_e.append(blocks_e)
        figures[f"sigma_{int(sigma)}"] = {
            "spearman_mean_per_image": round(float(np.mean(per_image)), 3),
            "spearman_pooled": round(float(spearmanr(np.concatenate(pooled_u), np.concatenate(pooled_e)).correlation), 3)}
    return figures


def blocks(plane: np.ndarray, size: int = 16) -> np.ndarray:
    height, width = plane.shape[0] // size * size, plane.shape[1] // size * size
    return plane[:height, :width].reshape(height // size, size, width // size, size).mean(axis=(1, 3)).ravel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--only", choices=("digits", "sentiment", "denoise"))
    parser.add_argument("--digits", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--data-dir", help=f"MNIST IDX directory (default: ${mnist.ENV_VAR})")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--record", action="store_true", help="write the figures into the shipped models' metadata and cards")
    args = parser.parse_args(argv)
    report = {}
    with httpx.Client(base_url=args.url, timeout=300) as client:
        if args.only in (None, "digits"):
            report["digits"] = digits_faithfulness(client, args.digits, args.data_dir)
        if args.only in (None, "sentiment"):
            report["sentiment"] = sentiment_faithfulness(client, args.texts)
        if args.only in (None, "denoise"):
            report["denoise"] = denoise_uncertainty(client)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.record:
        for model, figures in report.items():
            record(ARTIFACTS / model, {**METHODS[model], "measured_through_the_server": figures, "command": COMMAND})
    return 0


def record(directory: Path, explanations: dict) -> None:
    """Put the explanations' description and figures into a shipped model's metadata.json and MODEL_CARD.md."""
    from modelcore.card import CARD_FILE, METADATA_FILE, ModelMetadata, explanations_section

    metadata = ModelMetadata.read(directory)
    metadata.explanations = explanations
    metadata.rewrite(directory, explanations_section(explanations))
    print(f"recorded in {directory / METADATA_FILE} and {directory / CARD_FILE}")


if __name__ == "__main__":
    sys.exit(main())
