"""Training dry run -> ONNX export -> metadata, on a real (one-batch) model."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import digits as export_digits
from modelcore.card import CARD_FILE, MODEL_FILE, ModelMetadata, file_sha256
from training.common import EarlyStopping, load_checkpoint
from training.networks import DigitNet


def test_dry_run_writes_a_checkpoint_that_rebuilds_the_model(tiny_checkpoint):
    model_config, state_dict, meta = load_checkpoint(tiny_checkpoint)
    model = DigitNet(**model_config)
    model.load_state_dict(state_dict)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert meta["training"]["dry_run"] is True
    assert meta["data"]["licence"] == "CC BY-SA 3.0"
    assert 0.0 <= meta["metrics"]["test_accuracy"] <= 1.0
    assert np.array(meta["metrics"]["confusion_matrix"]).shape == (10, 10)


def test_export_is_a_valid_single_file_onnx_graph(tiny_export):
    files = sorted(path.name for path in tiny_export.iterdir())
    assert files == sorted([MODEL_FILE, "metadata.json", CARD_FILE])  # no .onnx.data sidecar
    onnx.checker.check_model(onnx.load(str(tiny_export / MODEL_FILE)), full_check=True)


def test_export_records_parity_with_pytorch_on_1000_real_digits(tiny_export):
    parity = ModelMetadata.read(tiny_export).export["parity"]
    assert parity["inputs"] == 1000
    assert parity["same_label"] == "1000/1000"
    assert parity["max_abs_diff"] <= parity["tolerance"]["atol"] + parity["tolerance"]["rtol"]


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_exported_graph_has_a_dynamic_batch_axis_and_outputs_probabilities(tiny_export, batch):
    session = ort.InferenceSession(str(tiny_export / MODEL_FILE), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(batch).uniform(0, 255, (batch, 1, 28, 28)).astype(np.float32)
    (probabilities,) = session.run(["probabilities"], {"pixels": pixels})
    assert probabilities.shape == (batch, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_metadata_identifies_the_file_it_describes(tiny_export):
    metadata = ModelMetadata.read(tiny_export)
    assert metadata.sha256 == file_sha256(tiny_export / MODEL_FILE)
    assert metadata.version == metadata.sha256[:12]
    assert metadata.labels == [str(d) for d in range(10)]
    assert metadata.preprocessing["function"] == "modelcore.digits.to_mnist_layout"
    assert "CC BY-SA 3.0" in (tiny_export / CARD_FILE).read_text()


def test_metadata_refuses_a_model_file_that_was_swapped(tiny_export, tmp_path):
    for path in tiny_export.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / MODEL_FILE).write_bytes((tmp_path / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        ModelMetadata.read(tmp_path)


def test_export_rebuilds_the_model_from_the_checkpoint_alone(tiny_checkpoint, tmp_path):
    metadata = export_digits.run(tiny_checkpoint, tmp_path)
    trained = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    assert metadata.metrics["test_accuracy"] == trained["metrics"]["test_accuracy"]
    assert metadata.training["model_config"]["width"] == 8


def test_early_stopping_waits_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    improvements = [stopper.step(loss, epoch) for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.4, 0.45, 0.5])]
    assert improvements == [True, True, False, True, False, False]
    assert stopper.should_stop and stopper.best_epoch == 3
