"""The served models in-process, through the model contract, on the tiny exported models imported into a temporary
model store and loaded by the server's own repository (as each worker does)."""

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelcore import digits
from modelcore.errors import InputError
from modelcore.images import png_bytes
from service import store
from service.models.contract import Upload
from service.models.registry import built_in
from service.operations.settings import Settings
from service.runtime.repository import Repository


@pytest.fixture(scope="module")
def repository(tiny_exports):
    """Every registered model's tiny export, imported into the temp store and loaded as a worker loads them."""
    import bentoml

    loaded = Repository()
    for name, export in tiny_exports.items():
        tag = store.import_model(export)
        loaded.load(built_in(name), Path(bentoml.models.get(tag).path), tag, Settings())
    yield loaded
    loaded.close()


def upload(data: bytes) -> Upload:
    return Upload(data, "in the multipart field 'image'")


def png_of(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_repository_loads_each_model_from_the_store_with_its_metadata(repository):
    model = repository.get("digits")
    assert model.session.tag == f"digits:{model.version}"
    assert model.session.provider == "CPUExecutionProvider"  # no GPU in this environment
    assert model.info()["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert not repository.failures


def test_classify_returns_label_probabilities_and_model(repository, mnist_test):
    images, _ = mnist_test
    model = repository.get("digits")
    answer = asyncio.run(model.classify_upload(upload(png_bytes(images[0]))))
    session = model.session
    expected = session.run(session.feeds(digits.to_mnist_layout(images[0].astype(np.float32))[None, None]))["probabilities"][0]
    assert answer["label"] == int(expected.argmax())
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-6)
    assert answer["model"]["name"] == "digits" and len(answer["probabilities"]) == 10


def test_classify_refuses_a_non_image_with_its_own_415_naming_where_it_was_sent(repository):
    with pytest.raises(InputError) as refused:
        asyncio.run(repository.get("digits").classify_upload(Upload(b"not an image", "as the request body")))
    assert refused.value.status == 415 and "PNG or JPEG" in refused.value.message
    assert "as the request body" in refused.value.message and "multipart" not in refused.value.message


def test_classify_arrays_keeps_input_order(repository, mnist_test):
    images, _ = mnist_test
    batch = [digits.to_mnist_layout(image.astype(np.float32)).tolist() for image in images[:5]]
    model = repository.get("digits")

    async def both_orders():
        return await model.classify_arrays(images=batch), await model.classify_arrays(images=batch[::-1])

    forward, backward = asyncio.run(both_orders())
    assert [r["label"] for r in forward["results"]] == [r["label"] for r in backward["results"]][::-1]


def test_the_friendly_and_v2_encodings_come_from_one_prediction(repository, mnist_test):
    model = repository.get("digits")
    pixels = np.stack([digits.to_mnist_layout(image.astype(np.float32)) for image in mnist_test[0][:6]])[:, None]
    prediction = asyncio.run(model.predict(pixels))
    tensors = prediction.tensors()
    assert [row["label"] for row in prediction.rows()] == tensors["label"].tolist()
    assert [row["in_distribution"] for row in prediction.rows()] == tensors["in_distribution"].tolist()


def test_concurrent_requests_share_batches_and_get_their_own_answers(repository, mnist_test):
    images, _ = mnist_test
    layouts = [digits.to_mnist_layout(image.astype(np.float32)) for image in images[:32]]
    model = repository.get("digits")
    session = model.session
    expected = session.run(session.feeds(np.stack(layouts)[:, None]))["probabilities"].argmax(axis=1)

    async def many():
        return await asyncio.gather(*(model.classify_arrays(images=[layout.tolist()]) for layout in layouts))

    answers = asyncio.run(many())
    assert [answer["results"][0]["label"] for answer in answers] == expected.tolist()


def test_serving_imports_nothing_outside_the_serve_extras():
    training_only = ["torch", "sklearn", "skimage", "transformers", "matplotlib", "onnx", "mlxtend"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({training_only!r}))\n"  # importing any of them now fails
        "import service.app, service.store\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_sentiment_returns_one_result_per_text_in_order(repository):
    texts = ["I love it", "word " * 200, "😡 worst delay ever"]
    model = repository.get("sentiment")

    async def forward_and_back():
        return await model.classify(texts=texts), await model.classify(texts=texts[::-1])

    forward, backward = asyncio.run(forward_and_back())
    assert [r["truncated"] for r in forward["results"]] == [False, True, False]
    assert [r["probabilities"] for r in forward["results"]] == [r["probabilities"] for r in backward["results"]][::-1]
    assert all(set(r["probabilities"]) == {"negative", "neutral", "positive"} for r in forward["results"])
    assert forward["model"]["name"] == "sentiment"


def test_concurrent_sentiment_requests_of_different_lengths_batch_correctly(repository):
    texts = [f"flight number {i} was " + "really " * i + "late" for i in range(12)]
    model = repository.get("sentiment")

    async def alone_then_together():
        alone = [await model.classify(texts=[text]) for text in texts]
        together = await asyncio.gather(*(model.classify(texts=[text]) for text in texts))
        return alone, together

    alone, together = asyncio.run(alone_then_together())
    # Dynamic INT8 quantisation scales activations per batch, so batch-mates shift probabilities slightly.
    for one, other in zip(alone, together):
        np.testing.assert_allclose(list(one["results"][0]["probabilities"].values()),
                                   list(other["results"][0]["probabilities"].values()), atol=0.05)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_denoise_answers_a_png_of_the_same_size_and_mode(repository, mode):
    import skimage.data

    answer = asyncio.run(repository.get("denoise").denoise_upload(upload(png_of(skimage.data.astronaut()[:90, :120], mode))))
    assert answer.media_type == "image/png"
    result = Image.open(io.BytesIO(answer.content))
    assert result.size == (120, 90) and result.mode == mode
    assert len(answer.headers["X-Noise-Sigma"].split(",")) == (1 if mode in ("L", "LA") else 3)


def test_denoise_uses_the_callers_noise_level_hint(repository):
    grey = png_of(np.full((40, 40), 128, dtype=np.uint8))
    answer = asyncio.run(repository.get("denoise").denoise_upload(upload(grey), sigma=33.0))
    assert answer.headers["X-Noise-Sigma"] == "33.00"


def test_denoise_refuses_images_over_its_pixel_limit(repository):
    big = io.BytesIO()
    Image.new("L", (2048, 1100)).save(big, format="PNG")  # 2.25 Mpx > the 2 Mpx default
    with pytest.raises(InputError) as refused:
        asyncio.run(repository.get("denoise").denoise_upload(upload(big.getvalue())))
    assert refused.value.status == 413 and "pixels" in refused.value.message
