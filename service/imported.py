"""Bring your own ONNX model: users' graphs imported with `python -m service.store import-onnx`, served over v2.

An imported model is a model-store entry labelled `source=import-onnx` with the same files as ours
(model.onnx, metadata.json, MODEL_CARD.md); its v2 signature is its graph's own inputs and outputs, and a
request's tensors go to the graph unchanged (batched with concurrent requests along a dynamic first axis).
The server declares the latest version of each imported name when it starts, so a restart serves new imports.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from modelcore.card import TensorSpec
from modelcore.errors import InputError
from service.registry import TensorSig, V2Signature

log = logging.getLogger("bentoml.modelserver")

SOURCE_LABEL = {"source": "import-onnx"}
# onnxruntime's element types -> (v2 datatype, numpy dtype name). Strings, bfloat16 and complex types are not served.
ORT_TYPES = {
    "tensor(bool)": ("BOOL", "bool"), "tensor(uint8)": ("UINT8", "uint8"), "tensor(uint16)": ("UINT16", "uint16"),
    "tensor(uint32)": ("UINT32", "uint32"), "tensor(uint64)": ("UINT64", "uint64"), "tensor(int8)": ("INT8", "int8"),
    "tensor(int16)": ("INT16", "int16"), "tensor(int32)": ("INT32", "int32"), "tensor(int64)": ("INT64", "int64"),
    "tensor(float16)": ("FP16", "float16"), "tensor(float)": ("FP32", "float32"), "tensor(double)": ("FP64", "float64"),
}
V2_OF_NUMPY = {numpy_name: v2 for v2, numpy_name in ORT_TYPES.values()}


def imported_tags(reserved: set[str]) -> list[str]:
    """The store tag of the newest version of every imported model whose name no built-in model uses."""
    import bentoml

    newest: dict[str, Any] = {}
    for stored in bentoml.models.list():
        if stored.info.labels.get("source") != SOURCE_LABEL["source"]:
            continue
        name = stored.tag.name
        if name in reserved:
            log.warning("imported model %s is not served: a built-in model has that name", stored.tag)
            continue
        if name not in newest or stored.info.creation_time > newest[name].info.creation_time:
            newest[name] = stored
    return [str(stored.tag) for _, stored in sorted(newest.items())]


def imported_models_mixin(reserved: set[str]) -> type:
    """A class declaring every imported model as a BentoModel (so `bentoml build` packs them too)."""
    import bentoml

    attributes = {f"imported_model_{index}": bentoml.models.BentoModel(tag)
                  for index, tag in enumerate(imported_tags(reserved))}
    return type("ImportedModels", (), attributes)


def signature(specs_in: list[TensorSpec], specs_out: list[TensorSpec]) -> V2Signature:
    """The v2 signature of an imported graph: its own tensor names, datatypes and shapes (-1 for a named axis)."""
    def sig(spec: TensorSpec) -> TensorSig:
        return TensorSig(spec.name, (V2_OF_NUMPY[spec.dtype],), tuple(-1 if isinstance(d, str) else d for d in spec.shape))

    return V2Signature(inputs=tuple(sig(spec) for spec in specs_in), outputs=tuple(sig(spec) for spec in specs_out),
                       infer=infer)


async def infer(model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request's tensors straight into the graph; every output back."""
    rows = {len(array) for array in inputs.values() if array.ndim}
    if model.batchable and len(rows) > 1:
        raise InputError(f"Every input must have the same first (batch) dimension; got {sorted(rows)}.")
    feeds = {spec.name: np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype) for spec in model.metadata.inputs}
    return await model.predict_outputs(feeds)
