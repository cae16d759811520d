"""Sentiment endpoints: text sentiment (negative / neutral / positive) with a fine-tuned MiniLM."""

import asyncio
import functools
from pathlib import Path
from typing import Annotated, Literal

import bentoml
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from modelcore.sentiment import LABELS, TOKENIZER_FILE, TextEncoder
from service.http import answers_client_errors
from service.runtime import OnnxModel
from service.schemas import ModelRef
from service.settings import get_settings

NAME = "sentiment"
settings = get_settings()


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or whitespace only; send at least one visible character")
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_text_chars), AfterValidator(not_blank)]


class SentimentResult(BaseModel):
    label: Literal["negative", "neutral", "positive"]
    probabilities: dict[str, float] = Field(description="probability of each label: negative, neutral, positive")
    truncated: bool = Field(description="true when the text was longer than the model window and only its start was read")


class SentimentResponse(BaseModel):
    results: list[SentimentResult] = Field(description="one result per input text, in input order")
    model: ModelRef


@functools.lru_cache(maxsize=4)
def text_encoder(directory: Path, max_length: int) -> TextEncoder:
    """The model's own tokenizer.json, loaded once per model version."""
    return TextEncoder(directory / TOKENIZER_FILE, max_length)


class SentimentAPI:
    """Mixed into the ModelServer: the /sentiment/* endpoints."""

    sentiment_model = bentoml.models.BentoModel(settings.model_tag(NAME))
    models: dict[str, OnnxModel]

    @bentoml.api(route="/sentiment/classify")
    @answers_client_errors(NAME)
    async def sentiment_classify(
        self,
        texts: Annotated[list[Text], Field(min_length=1, max_length=settings.max_items_per_request)],
    ) -> SentimentResponse:
        """Classify the sentiment of 1 to MODEL_SERVER_MAX_ITEMS_PER_REQUEST texts, each returned in input order.
        Trained on English tweets; any Unicode text is accepted."""
        model = self.models[NAME]
        encoder = text_encoder(model.directory, model.metadata.preprocessing["max_length"])
        encoded = await asyncio.to_thread(encoder.encode, texts)
        probabilities = await model.predict({"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
        results = [
            SentimentResult(label=LABELS[int(row.argmax())], probabilities=dict(zip(LABELS, row.tolist())), truncated=cut)
            for row, cut in zip(probabilities, encoded.truncated)
        ]
        return SentimentResponse(results=results, model=model.reference())
