"""The ModelServer class in-process, on the tiny exported model imported into a temporary model store."""

import asyncio
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from starlette.responses import JSONResponse

from modelcore import digits
from service import store


@pytest.fixture(scope="module")
def server(tiny_exports):
    """A ModelServer instance serving every registered model's tiny export (the only models in the temp store)."""
    for export in tiny_exports.values():
        store.import_model(export)
    from service.app import ModelServer

    return ModelServer()


def png_file(tmp_path, array: np.ndarray):
    path = tmp_path / "digit.png"
    Image.fromarray(array).save(path)
    return path


def test_server_loads_the_model_from_the_store_with_its_metadata(server, tiny_export):
    model = server.models["digits"]
    assert model.tag == f"digits:{model.version}"
    assert model.provider == "CPUExecutionProvider"  # no GPU in this environment
    assert model.info()["inputs"][0]["shape"] == ["batch", 1, 28, 28]


def test_classify_returns_label_probabilities_and_model(server, mnist_test, tmp_path):
    images, _ = mnist_test
    response = asyncio.run(server.digits_classify(image=png_file(tmp_path, images[0])))
    model = server.models["digits"]
    expected = model.run(model.feeds(digits.to_mnist_layout(images[0].astype(np.float32))[None, None]))["probabilities"][0]
    assert response.label == int(expected.argmax())
    np.testing.assert_allclose(response.probabilities, expected, rtol=1e-6)
    assert response.model.name == "digits" and len(response.probabilities) == 10


def test_classify_answers_a_non_image_with_its_own_415(server, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    response = asyncio.run(server.digits_classify(image=path))
    assert isinstance(response, JSONResponse) and response.status_code == 415
    assert "PNG or JPEG" in json.loads(response.body)["error"]


def test_classify_arrays_keeps_input_order(server, mnist_test):
    images, _ = mnist_test
    batch = [digits.to_mnist_layout(image.astype(np.float32)).tolist() for image in images[:5]]

    async def both_orders():
        forward = await server.digits_classify_arrays(images=batch)
        backward = await server.digits_classify_arrays(images=batch[::-1])
        return forward, backward

    forward, backward = asyncio.run(both_orders())
    assert [r.label for r in forward.results] == [r.label for r in backward.results][::-1]


def test_concurrent_requests_share_batches_and_get_their_own_answers(server, mnist_test):
    images, _ = mnist_test
    layouts = [digits.to_mnist_layout(image.astype(np.float32)) for image in images[:32]]
    model = server.models["digits"]
    expected = model.run(model.feeds(np.stack(layouts)[:, None]))["probabilities"].argmax(axis=1)

    async def many():
        return await asyncio.gather(*(server.digits_classify_arrays(images=[layout.tolist()]) for layout in layouts))

    answers = asyncio.run(many())
    assert [answer.results[0].label for answer in answers] == expected.tolist()


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


def test_sentiment_returns_one_result_per_text_in_order(server):
    texts = ["I love it", "word " * 200, "😡 worst delay ever"]

    async def forward_and_back():
        return await server.sentiment_classify(texts=texts), await server.sentiment_classify(texts=texts[::-1])

    forward, backward = asyncio.run(forward_and_back())
    assert [r.truncated for r in forward.results] == [False, True, False]
    assert [r.probabilities for r in forward.results] == [r.probabilities for r in backward.results][::-1]
    assert all(set(r.probabilities) == {"negative", "neutral", "positive"} for r in forward.results)
    assert forward.model.name == "sentiment"


def test_concurrent_sentiment_requests_of_different_lengths_batch_correctly(server):
    texts = [f"flight number {i} was " + "really " * i + "late" for i in range(12)]

    async def alone_then_together():
        alone = [await server.sentiment_classify(texts=[text]) for text in texts]
        together = await asyncio.gather(*(server.sentiment_classify(texts=[text]) for text in texts))
        return alone, together

    alone, together = asyncio.run(alone_then_together())
    # Dynamic INT8 quantisation scales activations per batch, so batch-mates shift probabilities slightly.
    for one, other in zip(alone, together):
        np.testing.assert_allclose(list(one.results[0].probabilities.values()),
                                   list(other.results[0].probabilities.values()), atol=0.05)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_denoise_answers_a_png_of_the_same_size_and_mode(server, tmp_path, mode):
    import skimage.data

    path = tmp_path / f"photo-{mode}.png"
    Image.fromarray(skimage.data.astronaut()[:90, :120]).convert(mode).save(path)
    response = asyncio.run(server.denoise(image=path, sigma=None))
    assert response.status_code == 200 and response.media_type == "image/png"
    result = Image.open(io.BytesIO(response.body))
    assert result.size == (120, 90) and result.mode == mode
    assert len(response.headers["x-noise-sigma"].split(",")) == (1 if mode in ("L", "LA") else 3)


def test_denoise_uses_the_callers_noise_level_hint(server, tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 128, dtype=np.uint8)).save(path)
    response = asyncio.run(server.denoise(image=path, sigma=33.0))
    assert response.headers["x-noise-sigma"] == "33.00"


def test_denoise_refuses_images_over_its_pixel_limit(server, tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (2048, 1100)).save(path)  # 2.25 Mpx > the 2 Mpx default
    response = asyncio.run(server.denoise(image=path, sigma=None))
    assert response.status_code == 413 and "pixels" in json.loads(response.body)["error"]
