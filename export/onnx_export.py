"""Export a PyTorch module to one self-contained ONNX file, check it, and measure parity with PyTorch."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch

OPSET = 18


def export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, Any]],
) -> None:
    """Write `module` to `path` (no external-data sidecar) and validate the graph with onnx.checker."""
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=OPSET,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def onnx_outputs(path: Path, feeds: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Run the ONNX file with onnxruntime (CPU) in batches; outputs concatenated along axis 0."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    total = len(next(iter(feeds.values())))
    chunks = [
        session.run(None, {name: value[start : start + batch_size] for name, value in feeds.items()})
        for start in range(0, total, batch_size)
    ]
    return [np.concatenate(parts) for parts in zip(*chunks)]


@torch.no_grad()
def parity(module: torch.nn.Module, path: Path, feeds: dict[str, np.ndarray], atol: float, rtol: float) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on real inputs; raise if they differ beyond the tolerance."""
    module.eval()
    produced = module(*(torch.from_numpy(value) for value in feeds.values()))
    every_expected = [produced.numpy()] if isinstance(produced, torch.Tensor) else [output.numpy() for output in produced]
    every_actual = onnx_outputs(path, feeds)
    for actual_output, expected_output in zip(every_actual, every_expected, strict=True):  # every graph output
        torch.testing.assert_close(torch.from_numpy(actual_output), torch.from_numpy(expected_output), atol=atol, rtol=rtol)
    actual, expected = every_actual[0], every_expected[0]
    same_argmax = int((actual.argmax(-1) == expected.argmax(-1)).sum())
    if same_argmax != len(expected):
        raise AssertionError(f"ONNX and PyTorch disagree on {len(expected) - same_argmax} of {len(expected)} labels")
    return {
        "inputs": len(expected),
        "max_abs_diff": max(float(np.abs(a - e).max()) for a, e in zip(every_actual, every_expected)),
        "outputs": len(every_actual),
        "same_label": f"{same_argmax}/{len(expected)}",
        "tolerance": {"atol": atol, "rtol": rtol},
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
    }


def versions() -> dict[str, str]:
    """Library versions that produced the file."""
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__, "opset": str(OPSET)}


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A scratch directory beside `out`; its files replace those in `out` only if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as staging:
        yield Path(staging)
        out.mkdir(parents=True, exist_ok=True)
        for produced in Path(staging).iterdir():  # only a fully verified export replaces the old one
            produced.replace(out / produced.name)

