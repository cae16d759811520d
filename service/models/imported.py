"""Bring your own ONNX model: a user's graph served over the Open Inference Protocol with no code.

The same contract as the built-in models with a generic implementation: the v2 signature is the graph's own
inputs and outputs (as `python -m service.store import-onnx` recorded them in its metadata), a request's tensors
go into the graph unchanged (batched with concurrent requests along a dynamic first axis), and every output comes
back by name. It has no friendly endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelcore.card import TensorSpec
from modelcore.errors import InputError
from service.models.contract import Prediction, ServedModel, TensorSig
from service.runtime.onnx_file import ORT_TYPES

SOURCE_LABEL = {"source": "import-onnx"}
V2_OF_NUMPY = {numpy_name: v2 for v2, numpy_name in ORT_TYPES.values()}


def tensor_sig(spec: TensorSpec) -> TensorSig:
    """The v2 tensor of a graph input or output: its name, datatype and shape (-1 for a named axis)."""
    return TensorSig(spec.name, (V2_OF_NUMPY[spec.dtype],), tuple(-1 if isinstance(d, str) else d for d in spec.shape))


@dataclass
class GraphOutputs(Prediction):
    outputs: dict[str, np.ndarray]

    def tensors(self) -> dict[str, np.ndarray]:
        return self.outputs


class ImportedModel(ServedModel):
    """Any imported ONNX graph: its name and signature come from its metadata, not from the class."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.inputs = tuple(tensor_sig(spec) for spec in session.metadata.inputs)
        self.outputs = tuple(tensor_sig(spec) for spec in session.metadata.outputs)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.session.name

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's tensors as the graph's feeds, in its own dtypes; one batch size across inputs."""
        rows = {len(array) for array in tensors.values() if array.ndim}
        if self.session.batchable and len(rows) > 1:
            raise InputError(f"Every input must have the same first (batch) dimension; got {sorted(rows)}.")
        return {spec.name: np.ascontiguousarray(tensors[spec.name], dtype=spec.dtype)
                for spec in self.session.metadata.inputs}

    async def predict(self, feeds: dict[str, np.ndarray]) -> GraphOutputs:
        return GraphOutputs(await self.session.predict_outputs(feeds))
