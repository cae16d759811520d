"""The shipped denoiser behind a real server: quality on the test images, and its bad-input answers."""

import io

import numpy as np
import pytest
from PIL import Image

from loadtest.denoise_eval import evaluate, png
from modelcore.card import ModelMetadata
from modelcore.denoise_data import TARGET_MARGINS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served_report(server_url, shipped_dir):
    report = evaluate(server_url, ModelMetadata.read(shipped_dir / "denoise"))
    print(f"\nserved denoise PSNR (blind) vs NL-means: {report}")
    return report


def test_served_denoising_matches_the_model_cards_evaluation(served_report, shipped_dir):
    summary = ModelMetadata.read(shipped_dir / "denoise").metrics["summary"]
    for key, served in served_report.items():
        # The endpoint answers 8-bit PNGs: rounding may cost a few hundredths of a dB, never more.
        assert abs(served["served_model_psnr"] - summary[key]["model_blind"]["psnr"]) < 0.1, (key, served)


def test_served_denoising_meets_the_quality_bar_against_non_local_means(served_report):
    for key, target in TARGET_MARGINS.items():
        assert served_report[key]["margin_db"] >= target, (key, served_report[key])


def test_served_denoising_removes_most_of_the_noise(served_report):
    for key, served in served_report.items():
        assert served["served_model_psnr"] >= served["noisy_psnr"] + 6.0, (key, served)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_answer_is_a_png_of_the_same_size_and_mode(client, mode):
    import skimage.data

    image = Image.fromarray(skimage.data.coffee()[:100, :150]).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = client.post("/denoise", files={"image": ("x.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    result = Image.open(io.BytesIO(response.content))
    assert result.size == (150, 100) and result.mode == mode
    assert response.headers["x-model-name"] == "denoise"


def test_noise_level_hint_is_accepted(client):
    data = png(np.random.default_rng(0).random((64, 64)))
    response = client.post("/denoise", files={"image": ("n.png", data, "image/png")}, data={"sigma": "20"})
    assert response.status_code == 200 and response.headers["x-noise-sigma"] == "20.00"


@pytest.mark.parametrize(
    ("case", "files", "data", "status"),
    [
        ("not_an_image", {"image": ("a.txt", b"plain text", "text/plain")}, None, 415),
        ("empty_file", {"image": ("e.png", b"", "image/png")}, None, 400),
        ("over_pixel_limit", {"image": ("big.png", None, "image/png")}, None, 413),
        ("sigma_out_of_range", {"image": ("s.png", None, "image/png")}, {"sigma": "500"}, 400),
        ("sigma_not_a_number", {"image": ("s.png", None, "image/png")}, {"sigma": "loud"}, 400),
    ],
)
def test_bad_requests_get_their_4xx(client, case, files, data, status):
    name, content, kind = files["image"]
    if content is None:
        size = (2048, 1100) if case == "over_pixel_limit" else (32, 32)
        buffer = io.BytesIO()
        Image.new("L", size).save(buffer, format="PNG")
        content = buffer.getvalue()
    response = client.post("/denoise", files={"image": (name, content, kind)}, data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_served_answer_is_the_mean_of_the_cards_self_ensemble(client, shipped_dir):
    import skimage.data

    from export.denoise import OnnxDenoiser
    from modelcore.card import MODEL_FILE
    from modelcore.denoise import SINGLE_PASS, add_noise

    metadata = ModelMetadata.read(shipped_dir / "denoise")
    orientations = tuple(metadata.preprocessing["self_ensemble"])
    noisy = add_noise(skimage.data.camera()[200:328, 150:310] / 255.0, 25.0, np.random.default_rng(4))
    response = client.post("/denoise", files={"image": ("n.png", png(noisy), "image/png")}, data={"sigma": "25"})
    assert response.status_code == 200 and response.headers["x-denoise-passes"] == str(len(orientations)) == "2"
    served = np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.float64)

    def in_process(passes: tuple[str, ...]) -> np.ndarray:
        plane = np.asarray(Image.open(io.BytesIO(png(noisy))), dtype=np.float32) / 255.0
        return np.round(np.clip(OnnxDenoiser(shipped_dir / "denoise" / MODEL_FILE, orientations=passes)(plane, 25.0), 0, 1) * 255)

    assert np.abs(served - in_process(orientations)).max() <= 1  # float summation order may move a pixel one level
    assert np.abs(served - in_process(SINGLE_PASS)).max() >= 2  # and one pass alone is measurably different
