"""One ONNX model file at run time: its metadata, an onnxruntime session on the chosen provider, and a batcher."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelcore.card import MODEL_FILE, ModelMetadata
from service.operations.metrics import observe_batch
from service.operations.settings import Settings
from service.runtime.batching import MicroBatcher

log = logging.getLogger("bentoml.modelserver")

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def choose_providers(wanted: str) -> list[str]:
    """onnxruntime providers for the setting; CUDA only where this onnxruntime build has it."""
    available = ort.get_available_providers()
    if wanted == "auto":
        wanted = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    chosen = [provider for provider in PROVIDERS[wanted] if provider in available]
    if wanted == "cuda" and "CUDAExecutionProvider" not in chosen:
        log.warning("provider=cuda requested but this onnxruntime has no CUDA support; using CPU")
    if "CUDAExecutionProvider" in chosen and hasattr(ort, "preload_dlls"):
        # The GPU image installs CUDA and cuDNN as NVIDIA's PyPI wheels, outside the loader's search path.
        ort.preload_dlls()
    return chosen


def create_session(path: Path, settings: Settings, threads: int | None = None) -> ort.InferenceSession:
    """An inference session with the configured threads and provider (CUDA falls back to CPU)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or settings.session_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.ort_spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = choose_providers(settings.provider)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except RuntimeError as exc:  # e.g. the GPU image on a node without a usable GPU or driver
        if providers == PROVIDERS["cpu"]:
            raise
        log.warning("CUDA session for %s failed (%s); using CPU", path.parent.name, str(exc).splitlines()[0])
        return ort.InferenceSession(str(path), options, providers=PROVIDERS["cpu"])


def collate(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack requests' inputs along the batch axis; shorter trailing axes (token sequences) are zero-padded.

    Zero padding is safe for token inputs because the attention mask is padded with zeros too.
    """
    if len(feeds) == 1:
        return feeds[0]
    return {name: _stack([feed[name] for feed in feeds]) for name in feeds[0]}


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    trailing = tuple(np.max([array.shape[1:] for array in arrays], axis=0))
    if all(array.shape[1:] == trailing for array in arrays):
        return np.concatenate(arrays)
    stacked = np.zeros((sum(len(array) for array in arrays), *trailing), dtype=arrays[0].dtype)
    start = 0
    for array in arrays:
        stacked[(slice(start, start + len(array)), *(slice(0, size) for size in array.shape[1:]))] = array
        start += len(array)
    return stacked


class OnnxSession:
    """One model directory from the model store, ready to run: validated metadata, warm session, batcher."""

    def __init__(self, directory: Path, tag: str, settings: Settings) -> None:
        self.directory = directory
        self.metadata = ModelMetadata.read(directory)
        self.tag = tag
        self.max_run_elements = settings.max_run_elements
        self.session = create_session(directory / MODEL_FILE, settings, settings.threads_for(self.metadata.name))
        self.provider = self.session.get_providers()[0]
        self.batcher = MicroBatcher(
            self.run_requests,
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            name=self.metadata.name,
            on_batch=lambda rows, seconds: observe_batch(self.metadata.name, self.metadata.version, rows, seconds),
            inline_budget_s=settings.inline_budget_ms / 1000,
            batchable=self.batchable,
            max_batch_s=settings.max_batch_ms / 1000,
        )
        self.warm_up()
        log.info("model %s loaded from %s on %s", tag, directory, self.provider)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs, in the order metadata declares them."""
        return [spec.name for spec in self.metadata.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.metadata.outputs]

    @property
    def batchable(self) -> bool:
        """Whether requests can share a run: every input's first axis is a named (dynamic) one."""
        return all(isinstance(spec.shape[0], str) for spec in self.metadata.inputs if spec.shape)

    def feeds(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """Graph inputs by name from arrays in the metadata's input order."""
        return dict(zip(self.input_names, arrays, strict=True))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Synchronous inference on one batch: every graph output by name.

        Batches over max_run_elements input values run in row chunks, so a request of many large
        tiles cannot take the process's memory with it.
        """
        rows = len(next(iter(feeds.values())))
        per_row = max(1, sum(array[0].size for array in feeds.values() if array.ndim))
        chunk = max(1, self.max_run_elements // per_row)
        if rows <= chunk or not self.batchable:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        parts = [self.session.run(self.output_names, {name: array[start : start + chunk] for name, array in feeds.items()})
                 for start in range(0, rows, chunk)]
        return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(self.output_names)}

    def run_requests(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Several requests' inputs in one inference call; every output, split back per request."""
        outputs = self.run(collate(feeds))
        if len(feeds) == 1:
            return [outputs]
        bounds = np.cumsum([len(next(iter(feed.values()))) for feed in feeds])[:-1]
        per_output = {name: np.split(array, bounds) for name, array in outputs.items()}
        return [{name: parts[index] for name, parts in per_output.items()} for index in range(len(feeds))]

    async def predict_outputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for one request's inputs, batched with concurrent requests where the graph allows."""
        rows = len(next(iter(feeds.values()))) if self.batchable else 1
        return await self.batcher.predict(feeds, rows=rows, values=sum(array.size for array in feeds.values()))

    async def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for one request's inputs (arrays with a leading batch axis), batched."""
        return (await self.predict_outputs(feeds))[self.output_names[0]]

    def warm_up(self) -> None:
        """Inference on zeros of every declared input, so the first request is not slow; the second run's time is
        the batcher's first estimate of the time per input value (a small example overestimates it: safe side)."""
        example = {spec.name: np.zeros(spec.example(), dtype=np.dtype(spec.dtype)) for spec in self.metadata.inputs}
        self.run(example)
        started = time.perf_counter()
        self.run(example)
        self.batcher.note_run(sum(array.size for array in example.values()), time.perf_counter() - started)

    def info(self) -> dict[str, Any]:
        """What the models endpoint says about this model."""
        return {**self.metadata.summary_info(), "tag": self.tag, "provider": self.provider}

    def reference(self) -> dict[str, str]:
        """The short identification every response carries."""
        return {"name": self.name, "version": self.version}

    def close(self) -> None:
        """Stop the batcher and release the onnxruntime session (its memory goes once nothing refers to it)."""
        self.batcher.close()
        self.session = None
