"""Sentiment: one-batch fine-tune -> ONNX fp32 + INT8 -> metadata, on the real MiniLM encoder."""

import numpy as np
import onnxruntime as ort
import pytest

from modelcore.card import MODEL_FILE, ModelMetadata
from modelcore.sentiment import TOKENIZER_FILE, TextEncoder
from training.common import load_checkpoint
from training.sentiment import encoder_dir


def test_dry_run_records_provenance_licences_and_metrics(tiny_sentiment_checkpoint):
    _, _, meta = load_checkpoint(tiny_sentiment_checkpoint)
    assert "CC BY-NC-SA 4.0" in meta["data"]["licence"]
    assert meta["encoder"]["licence"] == "Apache-2.0"
    assert set(meta["metrics"]["pytorch_test"]) >= {"accuracy", "macro_f1"}


def test_export_ships_a_quantised_model_under_30_mb_with_its_tokenizer(tiny_sentiment_export):
    metadata = ModelMetadata.read(tiny_sentiment_export)
    variants = metadata.metrics["variants"]
    assert metadata.export["shipped_variant"] == "int8"
    assert variants["int8"]["size_mb"] <= 30 < variants["fp32"]["size_mb"]
    assert (tiny_sentiment_export / MODEL_FILE).stat().st_size <= 30 * 2**20
    assert (tiny_sentiment_export / TOKENIZER_FILE).read_bytes() == (encoder_dir() / TOKENIZER_FILE).read_bytes()
    assert metadata.export["parity"]["same_label"] == "64/64"


@pytest.mark.parametrize(("batch", "texts"), [(1, ["fine"]), (3, ["good", "a longer complaint about the delayed flight", "meh"])])
def test_exported_graph_takes_any_batch_and_sequence_length(tiny_sentiment_export, batch, texts):
    metadata = ModelMetadata.read(tiny_sentiment_export)
    encoder = TextEncoder(tiny_sentiment_export / TOKENIZER_FILE, metadata.preprocessing["max_length"])
    encoded = encoder.encode(texts)
    session = ort.InferenceSession(str(tiny_sentiment_export / MODEL_FILE), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
    assert probabilities.shape == (batch, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_card_has_the_side_by_side_table_and_confusion_matrix(tiny_sentiment_export):
    card = (tiny_sentiment_export / "MODEL_CARD.md").read_text()
    assert "| model | accuracy | macro-F1 |" in card and "Confusion matrix" in card and "Per-class report" in card


def test_leave_one_source_out_scores_the_held_out_source_separately(tmp_path):
    from training.sentiment import parse_args, train

    meta = train(parse_args(["--dry-run", "--out", str(tmp_path), "--hold-out-source", "claritin", "--threads", "1"]))
    held_out = meta["metrics"]["leave_one_source_out"]
    assert held_out["source"] == "claritin" and meta["training"]["hold_out_source"] == "claritin"
    assert held_out["test_split"]["texts"] == 64 and held_out["all"]["texts"] == 3 * 64
    assert 0.0 <= held_out["test_split"]["macro_f1"] <= 1.0


def test_figures_recorded_after_export_land_in_metadata_and_card_once(tiny_sentiment_export, tmp_path):
    import shutil

    from modelcore.card import CARD_FILE, record_metrics

    directory = shutil.copytree(tiny_sentiment_export, tmp_path / "model")
    model_bytes = (directory / MODEL_FILE).read_bytes()
    record_metrics(directory, {"leave_one_source_out": {"macro_f1": 0.5}}, "## Levers\n\nthe first lever log\n")
    record_metrics(directory, {"leave_one_source_out": {"macro_f1": 0.6}}, "## Levers\n\nthe second lever log\n")
    card = (directory / CARD_FILE).read_text()
    assert ModelMetadata.read(directory).metrics["leave_one_source_out"] == {"macro_f1": 0.6}
    assert card.count("**leave_one_source_out**") == 1 and '"macro_f1": 0.6' in card
    assert card.count("## Levers") == 1 and "the second lever log" in card and "the first lever log" not in card
    assert (directory / MODEL_FILE).read_bytes() == model_bytes and card.rstrip().splitlines()[-1].startswith("Files:")
