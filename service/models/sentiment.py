"""Sentiment: text sentiment (negative / neutral / positive) with a fine-tuned MiniLM.

Internal batch: a list of checked texts, tokenised by the model's own tokenizer.json on the way into the session.
Wire forms: a JSON list of texts, the v2 BYTES input `text`.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from modelcore.errors import InputError
from modelcore.sentiment import TOKENIZER_FILE, TextEncoder
from service.models.contract import Endpoint, JsonBody, Prediction, ServedModel, TensorSig
from service.models.explain import without_span, word_spans
from service.models.schemas import ModelRef
from service.operations.metrics import count_explanation
from service.operations.settings import ModelSettings, get_settings, load

NAME = "sentiment"
MAX_ITEMS = get_settings().max_items_per_request  # request-schema limits are part of the schemas below
MAX_EXPLAINED_TEXTS = 16  # each costs one inference per word
# Tokenising a few short texts costs less than a thread hop; larger requests leave the event loop free.
INLINE_TOKENIZE_CHARS = 4096


class SentimentSettings(ModelSettings):
    max_text_chars: int = Field(
        5000, ge=1, le=1_000_000, description="longest accepted text; texts over the model window are truncated anyway"
    )


MAX_TEXT_CHARS = load(SentimentSettings).max_text_chars


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or whitespace only; send at least one visible character")
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(not_blank)]


class Texts(BaseModel):
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS, description="1 to "
                                       "MODEL_SERVER_MAX_ITEMS_PER_REQUEST texts, answered in input order")]


class ExplainTexts(BaseModel):
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_EXPLAINED_TEXTS, description="1 to 16 texts")]


class SentimentResult(BaseModel):
    label: Literal["negative", "neutral", "positive"]
    probabilities: dict[str, float] = Field(description="probability of each label: negative, neutral, positive")
    truncated: bool = Field(description="true when the text was longer than the model window: its start (a quarter of the window) and its end were read")


class SentimentResponse(BaseModel):
    results: list[SentimentResult] = Field(description="one result per input text, in input order")
    model: ModelRef


class WeightedWord(BaseModel):
    text: str = Field(description="the word as it appears in the input")
    start: int = Field(description="character offset of its first character in the input text")
    end: int = Field(description="character offset just past its last character")
    weight: float = Field(description="how much the predicted label's probability drops when the word is removed "
                                      "(negative: the word argued against the label)")


class ExplainedText(SentimentResult):
    tokens: list[WeightedWord] = Field(description="every word of the text, in order, with its weight")


class SentimentExplainResponse(BaseModel):
    results: list[ExplainedText] = Field(description="one explanation per input text, in input order")
    method: str
    model: ModelRef


@dataclass
class SentimentPredictions(Prediction):
    """(N, labels) probabilities and whether each text was cut to fit the model's window."""

    probabilities: np.ndarray  # (N, 3) float32, in the model's label order
    truncated: list[bool]
    label_names: list[str]

    @functools.cached_property
    def labels(self) -> list[str]:
        return [self.label_names[index] for index in self.probabilities.argmax(axis=1)]

    def rows(self) -> list[dict]:
        return [{"label": label, "probabilities": dict(zip(self.label_names, row.tolist())), "truncated": cut}
                for label, row, cut in zip(self.labels, self.probabilities, self.truncated)]

    def tensors(self) -> dict[str, np.ndarray]:
        labels = np.empty(len(self.labels), dtype=object)
        labels[:] = [label.encode() for label in self.labels]
        return {"probabilities": self.probabilities, "label": labels}


@functools.lru_cache(maxsize=4)
def text_encoder(directory: Path, max_length: int) -> TextEncoder:
    """The model's own tokenizer.json, loaded once per model version."""
    return TextEncoder(directory / TOKENIZER_FILE, max_length)


class Sentiment(ServedModel):
    name = NAME
    task = "text-classification"
    settings_class = SentimentSettings
    inputs = (TensorSig("text", ("BYTES",), (-1,)),)
    outputs = (TensorSig("probabilities", ("FP32",), (-1, 3)), TensorSig("label", ("BYTES",), (-1,)))
    max_batch_size = MAX_ITEMS
    endpoints = (
        Endpoint("/sentiment/classify", "classify", JsonBody(Texts), SentimentResponse),
        Endpoint("/sentiment/explain", "explain_texts", JsonBody(ExplainTexts), SentimentExplainResponse),
    )

    # decode: v2 tensors -> checked texts (JSON bodies are checked by their schema) ----------------------------

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[str]:
        """The BYTES input `text` as checked texts: UTF-8, not blank, within the length and count limits."""
        elements = tensors["text"]
        if not 1 <= elements.size <= MAX_ITEMS:
            raise InputError(f"Send 1 to {MAX_ITEMS} texts per request, not {elements.size}.")
        limit = self.settings.max_text_chars
        texts = []
        for index, element in enumerate(elements.ravel()):
            try:
                text = element.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"Text {index} is not valid UTF-8; send UTF-8 text.") from None
            if not text.strip() or len(text) > limit:
                raise InputError(f"Text {index} is empty or longer than {limit} characters; "
                                 "send at least one visible character and at most that many.")
            texts.append(text)
        return texts

    # predict --------------------------------------------------------------------------------------------------

    async def predict(self, texts: list[str]) -> SentimentPredictions:
        encoder = text_encoder(self.session.directory, self.metadata.preprocessing["max_length"])
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encoded = encoder.encode(texts)
        else:
            encoded = await asyncio.to_thread(encoder.encode, texts)
        probabilities = await self.session.predict(self.session.feeds(encoded.input_ids, encoded.attention_mask))
        return SentimentPredictions(probabilities, encoded.truncated, self.metadata.labels)

    # the friendly endpoints -----------------------------------------------------------------------------------

    async def classify(self, texts: list[str]) -> dict:
        """Classify the sentiment of 1 to MODEL_SERVER_MAX_ITEMS_PER_REQUEST texts, each returned in input order.
        Trained on English tweets; any Unicode text is accepted."""
        return {"results": (await self.predict(texts)).rows(), "model": self.reference()}

    async def explain_texts(self, texts: list[str]) -> dict:
        """Classify 1 to 16 texts like /sentiment/classify and say which words carried each verdict: every word with
        its character offsets and its weight toward the predicted label (leave-one-word-out occlusion)."""
        results = await self.explained(texts)
        count_explanation(NAME)
        return {"results": results, "method": OCCLUSION_METHOD, "model": self.reference()}

    # explanations ---------------------------------------------------------------------------------------------

    async def explained(self, texts: list[str]) -> list[dict]:
        """Each text classified, with the weight of every word toward its predicted label (one batch)."""
        spans = [word_spans(text) for text in texts]
        variants = [variant for text, words in zip(texts, spans) for variant in [text, *(without_span(text, w) for w in words)]]
        prediction = await self.predict(variants)
        rows, results, row = prediction.rows(), [], 0
        for text, words in zip(texts, spans):
            original, without = prediction.probabilities[row], prediction.probabilities[row + 1 : row + 1 + len(words)]
            label = int(original.argmax())
            weights = original[label] - without[:, label]
            results.append({**rows[row], "tokens": [
                {"text": text[start:end], "start": start, "end": end, "weight": round(float(weight), 6)}
                for (start, end), weight in zip(words, weights)]})
            row += 1 + len(words)
        return results


OCCLUSION_METHOD = ("leave-one-word-out occlusion: each word's weight is the drop in the predicted label's probability "
                    "when the text is classified without it (all variants of a text in one batch)")
