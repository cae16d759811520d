"""Sentiment: text sentiment (negative / neutral / positive) with a fine-tuned MiniLM - endpoints and registry entry."""

import asyncio
import functools
import json
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from modelcore.errors import InputError
from modelcore.sentiment import TOKENIZER_FILE, TextEncoder
from service.explain import count_explanation, without_span, word_spans
from service.http import answers_client_errors
from service.registry import (
    DryRun,
    HttpAnswer,
    HttpRequest,
    LoadProfile,
    ModelEntry,
    Smoke,
    TensorSig,
    V2Signature,
    Workload,
)
from service.runtime import OnnxModel
from service.schemas import ModelRef
from service.settings import get_settings

NAME = "sentiment"
settings = get_settings()  # request-schema limits are part of the class definitions below
MAX_EXPLAINED_TEXTS = 16  # each costs one inference per word


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


@functools.lru_cache(maxsize=4)
def text_encoder(directory: Path, max_length: int) -> TextEncoder:
    """The model's own tokenizer.json, loaded once per model version."""
    return TextEncoder(directory / TOKENIZER_FILE, max_length)


async def probabilities_of(model: OnnxModel, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
    """(N, labels) probabilities and whether each text was truncated to the model's window."""
    encoder = text_encoder(model.directory, model.metadata.preprocessing["max_length"])
    encoded = await asyncio.to_thread(encoder.encode, texts)
    return await model.predict(model.feeds(encoded.input_ids, encoded.attention_mask)), encoded.truncated


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
        probabilities, truncated = await probabilities_of(model, texts)
        labels = model.metadata.labels
        results = [
            SentimentResult(label=labels[int(row.argmax())], probabilities=dict(zip(labels, row.tolist())), truncated=cut)
            for row, cut in zip(probabilities, truncated)
        ]
        return SentimentResponse(results=results, model=model.reference())

    @bentoml.api(route="/sentiment/explain")
    @answers_client_errors(NAME)
    async def sentiment_explain(
        self,
        texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_EXPLAINED_TEXTS)],
    ) -> SentimentExplainResponse:
        """Classify 1 to 16 texts like /sentiment/classify and say which words carried each verdict: every word with
        its character offsets and its weight toward the predicted label (leave-one-word-out occlusion)."""
        model = self.models[NAME]
        results = await explained(model, texts)
        count_explanation(NAME)
        return SentimentExplainResponse(results=results, method=OCCLUSION_METHOD, model=model.reference())


# Explanations ------------------------------------------------------------------------------------

OCCLUSION_METHOD = ("leave-one-word-out occlusion: each word's weight is the drop in the predicted label's probability "
                    "when the text is classified without it (all variants of a text in one batch)")


async def explained(model: OnnxModel, texts: list[str]) -> list[ExplainedText]:
    """Each text classified, with the weight of every word toward its predicted label."""
    spans = [word_spans(text) for text in texts]
    variants = [variant for text, words in zip(texts, spans) for variant in [text, *(without_span(text, w) for w in words)]]
    probabilities, truncated = await probabilities_of(model, variants)
    labels, results, row = model.metadata.labels, [], 0
    for text, words in zip(texts, spans):
        original, without = probabilities[row], probabilities[row + 1 : row + 1 + len(words)]
        label = int(original.argmax())
        weights = original[label] - without[:, label]
        results.append(ExplainedText(
            label=labels[label], probabilities=dict(zip(labels, original.tolist())), truncated=truncated[row],
            tokens=[WeightedWord(text=text[start:end], start=start, end=end, weight=round(float(weight), 6))
                    for (start, end), weight in zip(words, weights)]))
        row += 1 + len(words)
    return results


# Open Inference Protocol v2 ----------------------------------------------------------------------


def v2_texts(elements: np.ndarray) -> list[str]:
    """The BYTES input `text` as checked texts: UTF-8, not blank, within the length and count limits."""
    limits = get_settings()
    if not 1 <= elements.size <= limits.max_items_per_request:
        raise InputError(f"Send 1 to {limits.max_items_per_request} texts per request, not {elements.size}.")
    texts = []
    for index, element in enumerate(elements.ravel()):
        try:
            text = element.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"Text {index} is not valid UTF-8; send UTF-8 text.") from None
        if not text.strip() or len(text) > limits.max_text_chars:
            raise InputError(f"Text {index} is empty or longer than {limits.max_text_chars} characters; "
                             "send at least one visible character and at most that many.")
        texts.append(text)
    return texts


async def v2_infer(model: OnnxModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """v2: BYTES `text` -> `probabilities` (in the model's label order) and `label` (BYTES)."""
    probabilities, _ = await probabilities_of(model, v2_texts(inputs["text"]))
    labels = np.empty(len(probabilities), dtype=object)
    labels[:] = [model.metadata.labels[index].encode() for index in probabilities.argmax(axis=1)]
    return {"probabilities": probabilities, "label": labels}


# Registry entry ----------------------------------------------------------------------------------


def smoke_request() -> HttpRequest:
    return HttpRequest("/sentiment/classify", json.dumps({"texts": ["I absolutely love this, best day ever!"]}).encode(),
                       "application/json")


def reads_positive(answer: HttpAnswer) -> bool:
    return answer.status == 200 and json.loads(answer.body)["results"][0]["label"] == "positive"


def labelled(answer: HttpAnswer) -> str | None:
    """None when every result carries a label and three probabilities, else what is wrong."""
    results = json.loads(answer.body).get("results", []) if answer.status == 200 else []
    if not results or any(len(result.get("probabilities", {})) != 3 or "label" not in result for result in results):
        return f"unexpected answer {answer.status}: {answer.body[:200]!r}"
    return None


ENTRY = ModelEntry(
    name=NAME,
    api=SentimentAPI,
    v2=V2Signature(
        inputs=(TensorSig("text", ("BYTES",), (-1,)),),
        outputs=(TensorSig("probabilities", ("FP32",), (-1, 3)), TensorSig("label", ("BYTES",), (-1,))),
        infer=v2_infer,
        max_batch_size=settings.max_items_per_request,
    ),
    smoke=Smoke(smoke_request, reads_positive),
    load=LoadProfile(
        workloads=(
            Workload("tweet", "/sentiment/classify", "loadtest.payloads:tweet_bodies",
                     noop_path="/diagnostics/noop-texts", check=labelled),
            Workload("tweets-32", "/sentiment/classify", "loadtest.payloads:tweet_bodies_32", items=32, check=labelled),
        ),
        mixed_weight=3,
        compute_feeds="loadtest.payloads:sentiment_feeds",
    ),
    # A one-batch model's F1 is noise: the export ships INT8 whatever it scores, evaluated on 64 test texts.
    dry_run=DryRun(export_options={"limit": 64, "max_f1_drop": 1.0}),
)
