"""What a user would write instead: a minimal FastAPI + uvicorn app running the digits CNN in PyTorch eager.

    uvicorn loadtest.baseline_fastapi:app --port 3100       # the benchmark starts it itself

Same architecture (training.digits.DigitNet) and the same decoding and MNIST preprocessing as the
served model; weights from runs/digits/checkpoint.pt when present, else the architecture freshly
initialised (speed does not depend on the weights). One request, one forward pass, no batching.
"""

from __future__ import annotations

from pathlib import Path

import torch
from fastapi import FastAPI, UploadFile

from modelcore import digits
from modelcore.images import decode_grey
from training.common import load_checkpoint
from training.networks import DigitNet

CHECKPOINT = Path(__file__).resolve().parent.parent / "runs" / "digits" / "checkpoint.pt"


def load_model() -> torch.nn.Module:
    if not CHECKPOINT.exists():
        return DigitNet().eval()
    config, state, _ = load_checkpoint(CHECKPOINT)
    model = DigitNet(**config)
    model.load_state_dict(state)
    return model.eval()


model = load_model()
app = FastAPI()


@app.post("/digits/classify")
def classify(image: UploadFile) -> dict:
    pixels = digits.to_mnist_layout(decode_grey(image.file.read(), 4096 * 4096))
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(pixels)[None, None]), dim=1)[0]
    return {"label": int(probabilities.argmax()), "probabilities": probabilities.tolist()}
