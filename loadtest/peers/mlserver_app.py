"""MLServer, as its documentation shows: a custom runtime per model (MLModel.load / predict) with adaptive batching
(up to 64, 2 ms) and two parallel inference workers, called over the Open Inference Protocol's REST API (JSON,
the PNG as a base64 BYTES element). `configure(folder, port)` writes the settings files the `mlserver start`
command reads.

    mlserver start FOLDER       # in .bench/mlserver (make bench-tools); the benchmark writes FOLDER and starts it
"""

import json
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import Base64Codec, NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from loadtest.peers.work import LABELS, OOD_THRESHOLD, classify_digits, classify_texts, pixels


class Digits(MLModel):
    async def load(self) -> bool:
        classify_digits(np.zeros((1, 28, 28), np.float32))  # the session, loaded and warm
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pngs = Base64Codec.decode_input(payload.inputs[0])
        probabilities, ood = classify_digits(np.concatenate([pixels(png) for png in pngs]))
        outputs = {"probabilities": probabilities, "label": probabilities.argmax(axis=1).astype(np.int64),
                   "ood_score": ood, "in_distribution": ood <= OOD_THRESHOLD}
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(name, value)
                                                                for name, value in outputs.items()])


class Sentiment(MLModel):
    async def load(self) -> bool:
        classify_texts(["warm up"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        results = classify_texts(StringCodec.decode_input(payload.inputs[0]))
        probabilities = np.array([[result["probabilities"][label] for label in LABELS] for result in results], np.float32)
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output("probabilities", probabilities),
            StringCodec.encode_output("label", [result["label"] for result in results])])


def configure(folder: Path, port: int) -> Path:
    """The settings files of a server with both models on `port` (gRPC and metrics on the next two)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2,
                                                      "parallel_workers": 2, "debug": False}))
    for name, runtime in (("digits", "Digits"), ("sentiment", "Sentiment")):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": f"loadtest.peers.mlserver_app.{runtime}",
            "max_batch_size": 64, "max_batch_time": 0.002}))
    return folder
