"""Sentiment text handling shared by training and serving: labels, text cleaning, tokenisation.

Tokenisation is the HuggingFace `tokenizers` library reading the encoder's own `tokenizer.json`,
which export copies next to the ONNX file, so training and serving run the very same artefact.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

LABELS = ("negative", "neutral", "positive")
TOKENIZER_FILE = "tokenizer.json"
# A text over the window keeps its first quarter and its end: reviews tend to open with context and close with the
# verdict (head + tail truncation, Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?"). Measured on
# the model shipped before it: IMDB reviews 0.678 -> 0.709 binary accuracy, drug reviews 0.552 -> 0.636 (the
# sentiment model card's lever table); texts within the window, nearly every tweet, are unchanged.
HEAD_SHARE = 0.25


def clean_text(text: str) -> str:
    """NFC-normalise and fold line breaks (the corpus has stray \\r) into single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class Encoded:
    """Token ids of a batch of texts, padded to the longest: (N, L) int64 arrays."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)


class TextEncoder:
    """Texts -> padded token ids within the model's window of `max_length` tokens: a longer text keeps its first
    `head_tokens` and its last tokens (the opening and closing special tokens stay in place)."""

    def __init__(self, tokenizer_path: Path, max_length: int) -> None:
        self.max_length = max_length
        self.head_tokens = round((max_length - 2) * HEAD_SHARE)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The file's own padding token where it names one (MPNet pads with <pad>, BERT-style vocabularies with [PAD]).
        padding = self.tokenizer.padding or {"pad_id": self.tokenizer.token_to_id("[PAD]") or 0}
        self.pad_id = padding["pad_id"]
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def encode(self, texts: list[str]) -> Encoded:
        """Clean and tokenise; `truncated[i]` says whether text i was longer than the window."""
        encodings = self.tokenizer.encode_batch([clean_text(text) for text in texts])
        return pad([self.fit(e.ids) for e in encodings], self.pad_id, [len(e.ids) > self.max_length for e in encodings])

    def fit(self, ids: list[int]) -> np.ndarray:
        """[first] head ... tail [last] when the ids are over the window, else the ids as they are."""
        if len(ids) > self.max_length:
            tail = self.max_length - 1 - self.head_tokens
            ids = ids[: 1 + self.head_tokens] + ids[-tail:]
        return np.asarray(ids, dtype=np.int64)


def pad(sequences: list[np.ndarray], pad_id: int, truncated: list[bool]) -> Encoded:
    """Right-pad token id sequences to the longest one."""
    longest = max(len(ids) for ids in sequences)
    input_ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return Encoded(input_ids, attention_mask, truncated)

