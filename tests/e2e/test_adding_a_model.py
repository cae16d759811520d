"""Adding a model takes its own module and one registry line: a fourth, tiny built-in model written here (a
scaler: y = 2x), added to a copy of the serving code, served beside the shipped models and called through its own
friendly endpoint, the Open Inference Protocol (tritonclient) and the API description. Nothing else is edited:
the test counts the files that differ from the original tree."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper

from modelcore.card import MODEL_FILE, ModelMetadata, TensorSpec, file_sha256
from service.operations.launch import ROOT, Server, free_port
from tests.e2e.conftest import private_home

pytestmark = pytest.mark.e2e
SERVING_CODE = ("service", "modelcore")
REGISTRY = Path("service/models/registry.py")
MODULE = Path("service/models/scaler.py")
SCALER_MODULE = '''"""Scaler: y = 2x on rows of four numbers - the smallest built-in model (tests/e2e/test_adding_a_model.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from service.models.contract import Endpoint, JsonBody, Prediction, ServedModel, TensorSig


class Rows(BaseModel):
    rows: Annotated[list[Annotated[list[float], Field(min_length=4, max_length=4)]], Field(min_length=1, max_length=64)]


@dataclass
class Scaled(Prediction):
    y: np.ndarray

    def rows(self) -> list[dict]:
        return [{"y": row.tolist()} for row in self.y]

    def tensors(self) -> dict[str, np.ndarray]:
        return {"y": self.y}


class Scaler(ServedModel):
    name = "scaler"
    inputs = (TensorSig("x", ("FP32",), (-1, 4)),)
    outputs = (TensorSig("y", ("FP32",), (-1, 4)),)
    max_batch_size = 64
    endpoints = (Endpoint("/scaler/scale", "scale", JsonBody(Rows)),)

    async def decode_tensors(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        return tensors["x"].astype(np.float32)

    async def predict(self, x: np.ndarray) -> Scaled:
        return Scaled(await self.session.predict(self.session.feeds(x)))

    async def scale(self, rows: list) -> dict:
        """Double every number of 1 to 64 rows of four."""
        return {"results": (await self.predict(np.asarray(rows, dtype=np.float32))).rows(), "model": self.reference()}
'''


def scaler_export(directory: Path) -> Path:
    """The scaler's model directory: an ONNX graph y = 2x and its metadata, as an export module would write them."""
    directory.mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "scaler", [x], [y], [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), directory / MODEL_FILE)
    sha256 = file_sha256(directory / MODEL_FILE)
    ModelMetadata(name="scaler", version=sha256[:12], task="scaling", summary="y = 2x", sha256=sha256,
                  inputs=[TensorSpec(name="x", shape=["batch", 4], dtype="float32")],
                  outputs=[TensorSpec(name="y", shape=["batch", 4], dtype="float32")]).write(directory)
    return directory


def differing_files(original: Path, copy: Path) -> list[str]:
    """Files added or changed in the copy's serving code (caches left out)."""
    found = []
    for path in sorted(copy.rglob("*")):
        relative = path.relative_to(copy)
        if path.is_file() and "__pycache__" not in relative.parts:
            source = original / relative
            if not source.exists() or not filecmp.cmp(source, path, shallow=False):
                found.append(str(relative))
    return found


@pytest.fixture(scope="module")
def tree_with_a_fourth_model(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("fourth-model")
    for package in SERVING_CODE:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / MODULE).write_text(SCALER_MODULE)
    registry = (copy / REGISTRY).read_text()
    (copy / REGISTRY).write_text(registry.replace('    "service.models.denoise:Denoise",\n',
                                                  '    "service.models.denoise:Denoise",\n    "service.models.scaler:Scaler",\n'))
    return copy


@pytest.fixture(scope="module")
def served(tree_with_a_fourth_model, model_home, tmp_path_factory):
    copy = tree_with_a_fourth_model
    home = private_home(model_home, tmp_path_factory.mktemp("fourth-model-home"))
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(copy)}
    export = scaler_export(tmp_path_factory.mktemp("scaler-export") / "scaler")
    subprocess.run([sys.executable, "-m", "service.store", "import", str(export)], cwd=copy, env=env, check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    log = copy / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service.app:ModelServer"], cwd=copy,
                                   env={**env, "MODEL_SERVER_PORT": str(port), "MODEL_SERVER_HOST": "127.0.0.1"},
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


def test_the_fourth_model_needs_its_module_and_one_registry_line(tree_with_a_fourth_model):
    assert differing_files(ROOT, tree_with_a_fourth_model) == [str(REGISTRY), str(MODULE)]
    added = set((tree_with_a_fourth_model / REGISTRY).read_text().splitlines()) - set((ROOT / REGISTRY).read_text().splitlines())
    assert added == {'    "service.models.scaler:Scaler",'}


def test_the_fourth_model_answers_its_friendly_endpoint_and_v2(served):
    with httpx.Client(base_url=served.url, timeout=30) as client:
        answer = client.post("/scaler/scale", json={"rows": [[1, 2, 3, 4], [0.5, 0, -1, 8]]})
        assert answer.status_code == 200, answer.text
        assert [row["y"] for row in answer.json()["results"]] == [[2, 4, 6, 8], [1, 0, -2, 16]]
        refused = client.post("/scaler/scale", json={"rows": [[1, 2, 3]]})
        assert refused.status_code == 400 and refused.json()["detail"][0]["loc"][:2] == ["rows", 0]
        assert "/scaler/scale" in client.get("/docs.json").json()["paths"]
        assert "scaler" in {model["name"] for model in client.get("/models").json()["models"]}
    v2 = triton.InferenceServerClient(served.url.removeprefix("http://"))
    x = triton.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, -1, 0.25, 3]], dtype=np.float32))
    np.testing.assert_array_equal(v2.infer("scaler", [x]).as_numpy("y"), [[2, -2, 0.5, 6]])
    v2.close()
