"""Triton Inference Server through PyTriton, as its documentation shows: a @batch inference function per model, bound
with dynamic batching (up to 64, 2 ms queue delay) and two instances each (two Python processes' worth of
preprocessing), served over Triton's HTTP endpoint with the binary tensor extension.

    python -m loadtest.peers.pytriton_app PORT       # in .bench/pytriton (make bench-tools); the benchmark starts it
"""

import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from loadtest.peers.work import LABELS, OOD_THRESHOLD, classify_digits, classify_texts, pixels

CONFIG = ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=2000))


@batch
def digits(image: np.ndarray) -> dict[str, np.ndarray]:
    probabilities, ood = classify_digits(np.concatenate([pixels(bytes(png[0])) for png in image]))
    return {"probabilities": probabilities, "label": probabilities.argmax(axis=1).astype(np.int64)[:, None],
            "ood_score": ood[:, None], "in_distribution": (ood <= OOD_THRESHOLD)[:, None]}


@batch
def sentiment(text: np.ndarray) -> dict[str, np.ndarray]:
    results = classify_texts([bytes(row[0]).decode() for row in text])
    probabilities = np.array([[result["probabilities"][label] for label in LABELS] for result in results], np.float32)
    labels = np.array([[result["label"].encode()] for result in results], dtype=np.object_)
    return {"probabilities": probabilities, "label": labels}


def main(port: int) -> None:
    config = TritonConfig(http_port=port, grpc_port=port + 1, metrics_port=port + 2)
    with Triton(config=config) as triton:
        triton.bind("digits", [digits, digits], inputs=[Tensor(name="image", shape=(1,), dtype=np.bytes_)],
                    outputs=[Tensor(name="probabilities", shape=(10,), dtype=np.float32),
                             Tensor(name="label", shape=(1,), dtype=np.int64),
                             Tensor(name="ood_score", shape=(1,), dtype=np.float32),
                             Tensor(name="in_distribution", shape=(1,), dtype=np.bool_)], config=CONFIG)
        triton.bind("sentiment", [sentiment, sentiment], inputs=[Tensor(name="text", shape=(1,), dtype=np.bytes_)],
                    outputs=[Tensor(name="probabilities", shape=(3,), dtype=np.float32),
                             Tensor(name="label", shape=(1,), dtype=np.bytes_)], config=CONFIG)
        triton.serve()


if __name__ == "__main__":
    main(int(sys.argv[1]))
