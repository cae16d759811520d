"""Denoise: one-batch training -> ONNX -> tiled inference, on a real (tiny) model."""

import numpy as np
import onnxruntime as ort
import pytest

from export.denoise import OnnxDenoiser
from modelcore.card import MODEL_FILE, ModelMetadata
from modelcore.denoise import add_noise
from training.common import load_checkpoint
from training.denoise import TEST_IMAGES, TRAIN_IMAGES, split_planes, training_planes


def test_test_images_are_never_training_images():
    assert not set(TEST_IMAGES) & set(TRAIN_IMAGES)
    assert "cat" not in TRAIN_IMAGES  # skimage's cat() is chelsea, a test image


def test_validation_strips_are_held_out_of_every_training_image():
    planes = training_planes()
    train, validation = split_planes(planes)
    for whole, kept, held in zip(planes, train, validation):
        assert kept.shape[1] + held.shape[1] == whole.shape[1] and held.shape[1] >= whole.shape[1] // 5


def test_dry_run_checkpoint_records_provenance(tiny_denoise_checkpoint):
    _, _, meta = load_checkpoint(tiny_denoise_checkpoint)
    assert meta["data"]["test_images"] == list(TEST_IMAGES)
    assert "CC0" in meta["data"]["licence"] and meta["training"]["dry_run"] is True


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 130, 258)])
def test_exported_graph_takes_any_batch_height_and_width(tiny_denoise_export, shape):
    session = ort.InferenceSession(str(tiny_denoise_export / MODEL_FILE), providers=["CPUExecutionProvider"])
    noisy = np.random.default_rng(0).random(shape).astype(np.float32)
    (out,) = session.run(None, {"noisy": noisy, "sigma": np.full((shape[0], 1), 20.0, dtype=np.float32)})
    assert out.shape == shape and out.min() >= 0 and out.max() <= 1


def test_metadata_records_parity_at_two_sizes(tiny_denoise_export):
    parity = ModelMetadata.read(tiny_denoise_export).export["parity"]
    assert len(parity["cases"]) == 4 and parity["max_abs_diff"] <= parity["tolerance"]["atol"]


def test_tiled_inference_matches_whole_image_inference(tiny_denoise_export):
    import skimage.data

    plane = add_noise(skimage.data.camera()[:600, :520] / 255.0, 25.0, np.random.default_rng(0)).astype(np.float32)
    tiled = OnnxDenoiser(tiny_denoise_export / MODEL_FILE)(plane, sigma=25.0)  # 600x520 -> four 352-pixel tiles
    session = ort.InferenceSession(str(tiny_denoise_export / MODEL_FILE), providers=["CPUExecutionProvider"])
    whole = session.run(None, {"noisy": plane[None, None], "sigma": np.array([[25.0]], dtype=np.float32)})[0][0, 0]
    # Away from the image border, overlaps cover the receptive field: tiles are seamless.
    np.testing.assert_allclose(tiled[30:-30, 30:-30], whole[30:-30, 30:-30], atol=1e-5)
