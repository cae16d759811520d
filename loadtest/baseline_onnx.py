"""The honest peer: the minimal FastAPI + onnxruntime app a user would write in an afternoon, same ONNX model.

    uvicorn loadtest.baseline_onnx:app --workers 2 --port 3100       # the benchmark starts it itself

The obvious lines: load the shipped digits model with onnxruntime's defaults, decode the upload and lay it out
as MNIST (the same preprocessing as the server, so the comparison is only about serving), run, answer JSON.
No validation beyond what decoding does, no batching, no limits.
"""

from pathlib import Path

import onnxruntime
from fastapi import FastAPI, UploadFile

from modelcore import digits
from modelcore.images import decode_grey

session = onnxruntime.InferenceSession(str(Path(__file__).resolve().parent.parent / "artifacts" / "digits" / "model.onnx"))
app = FastAPI()


@app.post("/digits/classify")
def classify(image: UploadFile) -> dict:
    pixels = digits.to_mnist_layout(decode_grey(image.file.read(), 4096 * 4096))[None, None]
    probabilities = session.run(None, {"pixels": pixels})[0][0]
    return {"label": int(probabilities.argmax()), "probabilities": probabilities.tolist()}
