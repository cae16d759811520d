"""Explanations and out-of-distribution answers on a real server: contracts, bad inputs and limits."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from loadtest.profiles.denoise import noisy_png
from loadtest.profiles.digits import seven
from modelcore.images import png_bytes
from tests.e2e.calls import smoke_call

pytestmark = pytest.mark.e2e


def upload(data: bytes, name: str = "digit.png") -> dict:
    return {"image": (name, data, "image/png")}


def big_seven(side: int) -> bytes:
    """The 7 drawn dark on light paper at `side` x `side` pixels."""
    return png_bytes(255 - np.asarray(Image.fromarray(seven()).resize((side, side), Image.Resampling.BILINEAR)))


def letter(character: str) -> bytes:
    """A typed letter in DejaVu Sans Bold (a held-out font), black on white."""
    canvas = Image.new("L", (96, 96), 255)
    font = ImageFont.truetype("DejaVuSans-Bold.ttf", 72)
    ImageDraw.Draw(canvas).text((14, 4), character, font=font, fill=0)
    return png_bytes(np.asarray(canvas))


# digits: heat map ----------------------------------------------------------------------------------


def test_digit_explanation_has_the_classify_fields_and_a_map_at_the_uploads_resolution(client):
    data = big_seven(120)
    explained = client.post("/digits/explain", files=upload(data)).json()
    classified = client.post("/digits/classify", files=upload(data)).json()
    assert explained["label"] == classified["label"] == 7
    np.testing.assert_allclose(explained["probabilities"], classified["probabilities"], rtol=1e-4, atol=1e-6)
    assert explained["in_distribution"] is True and explained["ood_score"] == pytest.approx(classified["ood_score"], abs=1e-5)
    heat = np.array(explained["heatmap"])
    assert heat.shape == (120, 120) and explained["heatmap_scale"] == 1.0
    assert "RISE" in explained["method"] and explained["model"]["name"] == "digits"
    ink = np.asarray(Image.open(io.BytesIO(data))) < 128
    assert heat[ink].mean() > heat[~ink].mean(), "the map should sit on the strokes"


def test_large_uploads_get_a_downscaled_map_with_its_scale(client):
    explained = client.post("/digits/explain", files=upload(big_seven(600))).json()
    assert np.array(explained["heatmap"]).shape == (256, 256)
    assert explained["heatmap_scale"] == pytest.approx(256 / 600)


def test_format_png_answers_the_upload_with_the_map_overlaid(client):
    answer = client.post("/digits/explain?format=png", files=upload(big_seven(300)))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(answer.content))
    assert overlay.size == (300, 300) and overlay.mode == "RGB"
    assert answer.headers["x-digit-label"] == "7"


@pytest.mark.parametrize(("data", "status"), [(b"not an image", 415), (b"", 400), (png_bytes(np.full((40, 40), 255, np.uint8)), 422)])
def test_digit_explanations_refuse_bad_uploads_like_classify(client, data, status):
    answer = client.post("/digits/explain", files=upload(data))
    assert answer.status_code == status and answer.json()["error"]


# digits: out of distribution -----------------------------------------------------------------------


def test_a_digit_is_in_distribution_and_letters_are_not(client):
    assert client.post("/digits/classify", files=upload(png_bytes(seven()))).json()["in_distribution"] is True
    flagged = [client.post("/digits/classify", files=upload(letter(c))).json()["in_distribution"] is False
               for c in "AKMWXR"]
    assert sum(flagged) >= 5, flagged


def test_every_digits_answer_carries_the_ood_fields(client, mnist_test):
    images = mnist_test[0][:8]
    arrays = client.post("/digits/classify-arrays", json={"images": images.tolist()}).json()["results"]
    raw = client.post("/digits/classify-image", content=png_bytes(images[0]), headers={"content-type": "image/png"}).json()
    for answer in [*arrays, raw]:
        assert isinstance(answer["in_distribution"], bool) and 0 <= answer["ood_score"] <= 1
    assert sum(answer["in_distribution"] for answer in arrays) >= 7


def test_the_threshold_travels_with_the_model(client):
    digits_info = next(m for m in client.get("/models").json()["models"] if m["name"] == "digits")
    assert 0 < digits_info["preprocessing"]["ood_threshold"] < 1
    assert [output["name"] for output in digits_info["outputs"]] == ["probabilities", "ood_score"]


# sentiment: the words that carried it ------------------------------------------------------------


def test_sentiment_explanation_weights_whole_words_with_their_offsets(client):
    # One word carries the verdict: occlusion cannot single out words that each carry it alone (the card's limits).
    text = "The crew was wonderful on this flight!"
    explained = client.post("/sentiment/explain", json={"texts": [text]}).json()
    (result,) = explained["results"]
    classified = client.post("/sentiment/classify", json={"texts": [text]}).json()["results"][0]
    assert result["label"] == classified["label"] == "positive"
    words = [token["text"] for token in result["tokens"]]
    assert words == ["The", "crew", "was", "wonderful", "on", "this", "flight", "!"]
    assert all(text[token["start"] : token["end"]] == token["text"] for token in result["tokens"])
    strongest = max(result["tokens"], key=lambda token: token["weight"])
    assert strongest["text"] == "wonderful" and strongest["weight"] > 0.1, result["tokens"]
    assert "occlusion" in explained["method"]


def test_sentiment_explanation_takes_1_to_16_texts(client):
    assert client.post("/sentiment/explain", json={"texts": ["fine"] * 16}).status_code == 200
    assert client.post("/sentiment/explain", json={"texts": ["fine"] * 17}).status_code == 400
    assert client.post("/sentiment/explain", json={"texts": []}).status_code == 400
    assert client.post("/sentiment/explain", json={"texts": ["   "]}).status_code == 400


# denoise: what was removed, and where to doubt it ------------------------------------------------


def decoded(answer: dict, key: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer[key]))), dtype=np.float64)


def test_denoise_explanation_maps_are_pngs_of_the_uploads_size(client):
    explained = client.post("/denoise/explain", files=upload(noisy_png())).json()
    noise, uncertainty = decoded(explained, "noise"), decoded(explained, "uncertainty")
    assert noise.shape == uncertainty.shape == (96, 96)
    removed = (noise - explained["noise_scale"]["offset"]) / explained["noise_scale"]["gain"]
    assert 15 < removed.std() < 35, "it removed about the sigma-25 noise it was given"
    assert explained["noise_level_in_range"] is True and explained["trained_sigma_range"] == [0.0, 55.0]
    assert 20 < explained["noise_sigma"][0] < 30


def test_an_upload_noisier_than_training_is_flagged(client):
    rng = np.random.default_rng(0)
    very_noisy = png_bytes(np.clip(128 + rng.normal(0, 90, (64, 64)), 0, 255).astype(np.uint8))
    explained = client.post("/denoise/explain", files=upload(very_noisy)).json()
    assert explained["noise_level_in_range"] is False
    assert client.post("/denoise", files=upload(very_noisy)).headers["x-noise-level-in-range"] == "false"
    assert smoke_call(client, "denoise").headers["x-noise-level-in-range"] == "true"


def test_denoise_explanation_refuses_what_denoise_refuses(client):
    assert client.post("/denoise/explain", files=upload(b"not an image")).status_code == 415
    assert client.post("/denoise/explain", files=upload(noisy_png()), data={"sigma": "500"}).status_code == 400


def test_explanations_are_counted_per_model(client):
    client.post("/sentiment/explain", json={"texts": ["great"]})
    metrics = client.get("/metrics").text
    assert 'modelserver_explanations_total{model="sentiment"}' in metrics


# measured through the server: regression guards on the figures the cards record ------------------------


def test_ood_figures_through_the_server_equal_the_digits_card(server_url, mnist_dir, tmp_path):
    import json

    from loadtest import ood_eval
    from modelcore.card import ModelMetadata
    from service.operations.launch import ROOT

    out = tmp_path / "ood.json"
    ood_eval.main(["--url", server_url, "--data-dir", str(mnist_dir), "--out", str(out)])
    served, card = json.loads(out.read_text()), ModelMetadata.read(ROOT / "artifacts" / "digits").metrics["ood"]
    assert served["auroc_overall"] == pytest.approx(card["auroc_overall"], abs=0.002)
    assert served["mnist_test_flagged"] == pytest.approx(card["mnist_test_flagged"], abs=0.001)
    for kind, figures in card["per_kind"].items():
        assert served["per_kind"][kind]["auroc"] == pytest.approx(figures["auroc"], abs=0.002), kind
    assert served["auroc_overall"] >= 0.98 and served["mnist_test_flagged"] <= 0.01
    assert min(figures["auroc"] for figures in served["per_kind"].values()) >= 0.95


def test_explanations_stay_faithful_on_a_sample(server_url, mnist_dir):
    from loadtest import explain_eval

    with httpx.Client(base_url=server_url, timeout=300) as client:
        digits_figures = explain_eval.digits_faithfulness(client, 150, str(mnist_dir))
        sentiment_figures = explain_eval.sentiment_faithfulness(client, 96)
    print(digits_figures, sentiment_figures)
    assert digits_figures["ratio"] <= 0.55
    assert sentiment_figures["ratio"] >= 2
