"""Ray Serve, as its documentation shows: a deployment per model with @serve.batch (up to 64, 2 ms) and two replicas,
behind Ray Serve's HTTP proxy: the PNG as the request body, texts as JSON.

    python -m loadtest.peers.ray_app PORT       # in .bench/ray (make bench-tools); the benchmark starts it
"""

import sys
import time

import numpy as np
from ray import serve
from starlette.requests import Request

from loadtest.peers.work import classify_digits, classify_texts, digit_answer, pixels


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class Digits:
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def classify(self, images: list[np.ndarray]) -> list[dict]:
        probabilities, ood = classify_digits(np.concatenate(images))
        return [digit_answer(row, score) for row, score in zip(probabilities, ood)]

    async def __call__(self, request: Request) -> dict:
        return await self.classify(pixels(await request.body()))


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class Sentiment:
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def classify(self, texts: list[str]) -> list[dict]:
        return classify_texts(texts)

    async def __call__(self, request: Request) -> dict:
        return {"results": [await self.classify((await request.json())["texts"][0])]}


if __name__ == "__main__":
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
    serve.run(Digits.bind(), name="digits", route_prefix="/digits/classify-image")
    serve.run(Sentiment.bind(), name="sentiment", route_prefix="/sentiment/classify")
    while True:
        time.sleep(3600)
