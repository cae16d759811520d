"""Proving a model runs before it is served: load it and run it on an example, in a child process with a memory
bound and a deadline, so a model that crashes onnxruntime, takes all the memory or hangs costs a refusal, not a
worker.

    python -m service.runtime.proving MODEL_DIR EXAMPLE_JSON      # what prove() runs; prints one JSON line

The example is the user's (arrays from an .npz, or a shape per input, or Triton's `model_warmup` in a load request)
or derived: zeros of every input with each named axis set to 1. The answer names the graph's inputs and outputs (as
onnxruntime reports them) and the example shapes that ran, which the server then warms the model up with.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelcore.card import MODEL_FILE

EXAMPLE_FILE = "example.npz"  # arrays given by the user, kept beside the model they proved


class ProofFailed(ValueError):
    """The model could not be loaded or run on its example; the message is the runtime's reason."""


@dataclass(frozen=True)
class Proof:
    inputs: list[dict]  # [{"name", "type": "tensor(float)", "shape": [...]}] as onnxruntime reports them
    outputs: list[dict]
    example_shapes: dict[str, list[int]]


def prove(directory: Path, example_shapes: dict[str, list[int]] | None = None, memory_mb: int = 2048,
          timeout_s: float = 60.0) -> Proof:
    """Load and run the model in `directory` in a child process; ProofFailed with the reason when it cannot."""
    # The child bounds its own memory before loading anything: no preexec_fn, which is unsafe in a process with
    # threads (a worker serving gRPC): a child forked from one was killed before it ran.
    command = [sys.executable, "-m", "service.runtime.proving", str(directory), json.dumps(example_shapes or {}),
               str(memory_mb * 2**20)]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        raise ProofFailed(f"loading and running the model took longer than {timeout_s:g} s "
                          "(MODEL_SERVER_MODEL_LOAD_TIMEOUT_S)") from None
    lines = finished.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if finished.returncode or "error" in answer or not answer:
        reason = answer.get("error") or _crash_reason(finished, memory_mb)
        raise ProofFailed(reason)
    return Proof(answer["inputs"], answer["outputs"], answer["example_shapes"])


def _crash_reason(finished: subprocess.CompletedProcess, memory_mb: int) -> str:
    tail = finished.stderr.strip().splitlines()[-1:] or ["no output"]
    if finished.returncode < 0 or "MemoryError" in finished.stderr or "bad_alloc" in finished.stderr:
        return (f"the model could not be loaded and run within {memory_mb} MB (MODEL_SERVER_MAX_MODEL_MEMORY_MB) "
                f"or crashed the runtime: {tail[0][:300]}")
    return f"the runtime failed: {tail[0][:300]}"


def example_feeds(session: Any, shapes: dict[str, list[int]], given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays for every input: the user's, else zeros of the given shape, else zeros with named axes set to 1."""
    feeds = {}
    for argument in session.get_inputs():
        if argument.name in given:
            feeds[argument.name] = given[argument.name]
            continue
        shape = shapes.get(argument.name) or [dim if isinstance(dim, int) and dim > 0 else 1 for dim in argument.shape]
        dtype = numpy_type(argument.type)
        feeds[argument.name] = np.full(shape, "", dtype=object) if dtype == object else np.zeros(shape, dtype=dtype)
    return feeds


def numpy_type(ort_type: str) -> np.dtype:
    names = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
             "tensor(bool)": "bool", "tensor(string)": "object"}
    return np.dtype(names.get(ort_type) or ort_type.removeprefix("tensor(").removesuffix(")"))


def _described(arguments: Any) -> list[dict]:
    return [{"name": a.name, "type": a.type, "shape": [d if isinstance(d, int) else (d or None) for d in a.shape]}
            for a in arguments]


def main() -> None:
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import onnxruntime as ort

    directory, shapes = Path(sys.argv[1]), json.loads(sys.argv[2])
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        given = dict(np.load(directory / EXAMPLE_FILE, allow_pickle=False)) if (directory / EXAMPLE_FILE).exists() else {}
        feeds = example_feeds(session, shapes, given)
        session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime raises is the reason given to the user
        print(json.dumps({"error": str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__}))
        return
    print(json.dumps({"inputs": _described(session.get_inputs()), "outputs": _described(session.get_outputs()),
                      "example_shapes": {name: list(array.shape) for name, array in feeds.items()}}))


if __name__ == "__main__":
    main()
