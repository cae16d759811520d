"""Plain BentoML, as its documentation shows: a service of two workers whose public endpoint takes the upload
(multipart field `image`) and calls a batchable API of the same service (adaptive batching up to 64, 2 ms), the
composition BentoML's batching guide recommends; texts as JSON.

    bentoml serve loadtest.peers.bentoml_app:Peer --port PORT      # in .bench/bentoml; the benchmark starts it
"""

from pathlib import Path

import bentoml
import numpy as np

from loadtest.peers.work import classify_digits, classify_texts, digit_answer, pixels


@bentoml.service(workers=2, logging={"access": {"enabled": False}})
class Peer:
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def classify_batch(self, images: np.ndarray) -> np.ndarray:
        probabilities, ood = classify_digits(images.astype(np.float32))  # the internal call sends float64
        return np.concatenate([probabilities, ood[:, None]], axis=1)

    @bentoml.api(route="/digits/classify")
    async def classify(self, image: Path) -> dict:
        (row,) = await self.to_async.classify_batch(pixels(image.read_bytes()))
        return digit_answer(row[:10], row[10])

    @bentoml.api(route="/sentiment/classify")
    def sentiment(self, texts: list[str]) -> dict:
        return {"results": classify_texts(texts)}
