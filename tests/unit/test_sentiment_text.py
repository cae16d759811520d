"""modelcore.sentiment and modelcore.sentiment_corpus on the real tokenizer file and the real corpus."""

import re

import numpy as np
import pytest

from modelcore.sentiment import TOKENIZER_FILE, TextEncoder, clean_text
from modelcore.sentiment_corpus import SOURCE_KEYWORDS, deduplicate, duplicate_key, load_splits
from training.sentiment import encoder_dir


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(encoder_dir() / TOKENIZER_FILE, max_length=16)


def test_clean_text_folds_carriage_returns_and_runs_of_space():
    assert clean_text("great\r\nflight   today \t") == "great flight today"


def test_encoding_pads_to_the_longest_text_with_a_mask(encoder):
    encoded = encoder.encode(["good", "a much longer sentence than the first"])
    assert encoded.input_ids.shape == encoded.attention_mask.shape
    assert encoded.attention_mask[0].sum() < encoded.attention_mask[1].sum() == encoded.input_ids.shape[1]
    assert encoded.input_ids[0, encoded.attention_mask[0].sum():].tolist() == [0] * (encoded.input_ids.shape[1] - encoded.attention_mask[0].sum())


def test_texts_over_the_window_are_truncated_and_flagged(encoder):
    encoded = encoder.encode(["short", "word " * 100, "word " * 14])
    assert encoded.truncated == [False, True, False]  # 14 words + [CLS] + [SEP] fill the window exactly
    assert encoded.input_ids.shape[1] == 16


def test_a_long_text_keeps_its_start_and_its_end(encoder):
    ids = encoder.encode(["opening " + "word " * 50 + "verdict"]).input_ids[0].tolist()
    assert ids[0] == encoder.tokenizer.token_to_id("[CLS]") and ids[-1] == encoder.tokenizer.token_to_id("[SEP]")
    # 14 tokens between them: a quarter (4) from the start, the other 10 from the end
    assert encoder.tokenizer.decode(ids).split() == ["opening", *["word"] * 12, "verdict"]
    assert encoder.encode(["opening " + "word " * 50 + "verdict"]).truncated == [True]


@pytest.mark.parametrize("text", ["I ❤️ this 😍", "café crème brûlée", "Ã©tÃ© mojibake", "中文 текст عربى", "\u200b\ufeff odd spaces"])
def test_any_unicode_text_encodes(encoder, text):
    encoded = encoder.encode([text])
    assert encoded.attention_mask.sum() >= 3  # [CLS], at least one token, [SEP]


def test_retweets_links_and_case_count_as_duplicates():
    assert duplicate_key("RT @united: Great  flight http://t.co/abc") == duplicate_key("great flight https://t.co/xyz")


def test_copies_that_disagree_on_the_label_are_dropped():
    rows = [
        {"sentiment": "positive", "confidence": "1", "text": "ok flight"},
        {"sentiment": "negative", "confidence": "0.6", "text": "OK flight"},
        {"sentiment": "neutral", "confidence": "", "text": "just landed"},
        {"sentiment": "neutral", "confidence": "0.7", "text": "RT @a: just landed"},
    ]
    texts, labels, confidence, sources, conflicting = deduplicate(rows)
    assert texts == ["just landed"] and labels == [1] and confidence == [1.0] and sources == [""] and conflicting == 1


def test_real_corpus_splits_are_disjoint_stratified_and_fixed():
    splits, stats = load_splits()
    keys = {name: {duplicate_key(text) for text in split.texts} for name, split in splits.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"] and not keys["validation"] & keys["test"]
    shares = {name: np.bincount(split.labels, minlength=3) / len(split) for name, split in splits.items()}
    assert np.allclose(shares["train"], shares["test"], atol=0.01)
    assert stats["rows"] == 38158 and stats["splits"]["test"] == len(splits["test"])
    again, _ = load_splits()
    assert again["test"].texts == splits["test"].texts


def test_every_tweet_is_given_the_source_its_topic_marks():
    splits, stats = load_splits()
    assert set(stats["sources"]) == set(SOURCE_KEYWORDS) and sum(stats["sources"].values()) == sum(stats["splits"].values())
    patterns = {name: re.compile(pattern) for name, pattern in SOURCE_KEYWORDS.items()}
    marked = [(source, [name for name, pattern in patterns.items() if pattern.search(text.lower())])
              for source, text in zip(splits["test"].sources, splits["test"].texts)]
    agreeing = [source in marks for source, marks in marked if marks]
    assert len(agreeing) > 0.9 * len(marked) and np.mean(agreeing) > 0.99
    airlines = splits["test"].where_source("us airlines")
    others = splits["test"].where_source("us airlines", keep=False)
    assert len(airlines) + len(others) == len(splits["test"]) and all("@" in text for text in airlines.texts[:50])


@pytest.mark.parametrize(("steps", "checks", "expected"), [(778, 2, {389, 778}), (465, 2, {232, 465}), (1, 2, {1}), (10, 3, {3, 7, 10})])
def test_validation_checks_are_evenly_spaced_and_never_back_to_back(steps, checks, expected):
    from training.sentiment import check_steps

    assert check_steps(steps, checks) == expected


def test_balanced_epochs_draw_every_source_equally_and_keep_the_epoch_size():
    from training.sentiment import source_balanced_rows

    sources = np.array(["large"] * 900 + ["small"] * 60 + ["middle"] * 240)
    rows = source_balanced_rows(sources, np.random.default_rng(0))
    drawn = dict(zip(*np.unique(sources[rows], return_counts=True), strict=True))
    assert drawn == {"large": 400, "middle": 400, "small": 400}
    large = rows[sources[rows] == "large"]
    assert len(set(large)) == 400  # a large source is subsampled, each row at most once


def test_balanced_batches_hold_rows_of_the_training_split_of_similar_length():
    from argparse import Namespace

    from training.sentiment import epoch_batches

    sources = np.array(["a"] * 100 + ["b"] * 10)
    lengths = np.arange(110)
    batches = epoch_batches(lengths, sources, Namespace(balance_sources=True, batch_size=8), np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert len(rows) == 110 and rows.max() < 110
    assert (sources[rows] == "b").sum() == 55
    assert max(np.ptp(lengths[batch]) for batch in batches) < 40  # sorted by length: 8 rows of 55 distinct lengths in 100
    unbalanced = np.concatenate(epoch_batches(lengths, sources, Namespace(balance_sources=False, batch_size=8), np.random.default_rng(1)))
    assert sorted(unbalanced) == list(range(110))
