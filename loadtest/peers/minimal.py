"""The app a user would write in an afternoon: FastAPI, onnxruntime, an async handler per endpoint, the project's own
preprocessing and the same answers; 2 uvicorn workers, one onnxruntime thread each. No batching, no limits.

    uvicorn loadtest.peers.minimal:app --workers 2 --port 3100       # the benchmark starts it itself
"""

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import Response

from loadtest.peers.work import classify_digits, classify_texts, denoise_png, digit_answer, pixels

app = FastAPI()


def classify_png(png: bytes) -> dict:
    probabilities, ood = classify_digits(pixels(png))
    return digit_answer(probabilities[0], ood[0])


@app.post("/digits/classify")
async def classify(image: UploadFile) -> dict:
    return classify_png(await image.read())


@app.post("/digits/classify-image")
async def classify_image(request: Request) -> dict:
    return classify_png(await request.body())


@app.post("/sentiment/classify")
async def sentiment(request: Request) -> dict:
    return {"results": classify_texts((await request.json())["texts"])}


@app.post("/denoise")
async def denoise(image: UploadFile) -> Response:
    return Response(denoise_png(await image.read()), media_type="image/png")
