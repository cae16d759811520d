"""LitServe, as its documentation shows: a LitAPI per model (setup / decode_request / batch / predict / unbatch /
encode_response) with batching (up to 64, 2 ms) and two workers, the digit as a multipart upload, texts as JSON.

    python -m loadtest.peers.litserve_app PORT       # in .bench/litserve (make bench-tools); the benchmark starts it
"""

import sys

import litserve as ls
import numpy as np

from loadtest.peers.work import classify_digits, classify_texts, digit_answer, pixels

BATCHING = {"max_batch_size": 64, "batch_timeout": 0.002}


class Digits(ls.LitAPI):
    def setup(self, device):
        classify_digits(np.zeros((1, 28, 28), np.float32))

    def decode_request(self, request):
        return pixels(request["image"].file.read())

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, batch):
        return classify_digits(batch)

    def unbatch(self, output):
        probabilities, ood = output
        return list(zip(probabilities, ood))

    def encode_response(self, output):
        return digit_answer(*output)


class Sentiment(ls.LitAPI):
    def setup(self, device):
        classify_texts(["warm up"])

    def decode_request(self, request):
        return request["texts"][0]

    def predict(self, texts):
        return classify_texts(list(texts))

    def encode_response(self, output):
        return {"results": [output]}


if __name__ == "__main__":
    apis = [Digits(api_path="/digits/classify", **BATCHING), Sentiment(api_path="/sentiment/classify", **BATCHING)]
    ls.LitServer(apis, accelerator="cpu", workers_per_device=2).run(port=int(sys.argv[1]), generate_client_file=False)
