"""Bring your own ONNX model: a graph built with onnx.helper, imported with the store command before the server
starts, served over v2 (tritonclient) with no code written; refused files leave the store and the repository as they
were. Imports into a running server are tests/e2e/test_model_repository.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper

from service.operations.launch import ROOT
from tests.e2e.conftest import private_home

pytestmark = pytest.mark.e2e

WEIGHTS = [2.0, 3.0, 4.0]


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def scaler(path: Path, batch: str | int = "batch") -> Path:
    """y = x * [2, 3, 4] and s = sum(x) per row: two outputs, a dynamic (or fixed) first axis."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [batch, 1])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3], WEIGHTS)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"]), helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)]
    return save(helper.make_graph(nodes, "scaler", [x], [y, s], [weights, axes]), path)


def doubler_with_onnx_defaults(path: Path) -> Path:
    """y = 2x made with the pinned onnx's own defaults (onnx 1.23: IR version 14, the newest opset)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "doubler", [x], [y], [two])
    onnx.save(helper.make_model(graph), path)
    return path


def newer_than_the_runtime(path: Path) -> Path:
    """A graph stamped with an opset no onnxruntime knows yet."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "future", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)])
    onnx.save(model, path)
    return path


def string_identity(path: Path) -> Path:
    text = helper.make_tensor_value_info("text", TensorProto.STRING, [1])
    same = helper.make_tensor_value_info("same", TensorProto.STRING, [1])
    return save(helper.make_graph([helper.make_node("Identity", ["text"], ["same"])], "strings", [text], [same]), path)


def import_onnx(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "service.store", "import-onnx", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def store_listing(home: Path) -> list[str]:
    """Every file of the model store and the repository (a refused import writes to neither)."""
    return sorted(str(path.relative_to(home)) for folder in ("models", "repository") for path in (home / folder).rglob("*")
                  if not {".workers", ".staging"} & set(path.parts))


@pytest.fixture(scope="module")
def home(model_home, tmp_path_factory) -> Path:
    return private_home(model_home, tmp_path_factory.mktemp("imported"))


@pytest.fixture(scope="module")
def served(home, start_server, tmp_path_factory):
    """The shipped models plus imported graphs (dynamic and fixed batch), imported before the server starts."""
    graphs = tmp_path_factory.mktemp("graphs")
    for name, path in (("scaler", scaler(graphs / "scaler.onnx")), ("fixed-scaler", scaler(graphs / "fixed.onnx", batch=2))):
        imported = import_onnx(home, str(path), "--name", name, "--labels", "a,b,c", "--description", "y = x * w")
        assert imported.returncode == 0, imported.stderr
        assert f"repository has {name}:" in imported.stdout and "no server is running" in imported.stdout
    imported = import_onnx(home, str(doubler_with_onnx_defaults(graphs / "doubler.onnx")), "--name", "doubler")
    assert imported.returncode == 0, imported.stderr
    server = start_server(home=home)
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    yield server, client
    client.close()


def infer(client, model: str, x: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    asked = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("y", "s")]
    result = client.infer(model, [tensor], outputs=asked)
    return {name: result.as_numpy(name) for name in ("y", "s")}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_an_imported_graph_is_served_over_v2_with_no_code(served, binary):
    _, client = served
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    answer = infer(client, "scaler", x, binary)
    np.testing.assert_allclose(answer["y"], x * np.array(WEIGHTS, dtype=np.float32))
    np.testing.assert_allclose(answer["s"], x.sum(axis=1, keepdims=True))


def test_a_graph_made_with_the_pinned_onnx_defaults_is_served(served, tmp_path):
    _, client = served
    assert onnx.load(str(doubler_with_onnx_defaults(tmp_path / "doubler.onnx"))).ir_version == onnx.IR_VERSION
    x = triton.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1.5, -2.0]], dtype=np.float32))
    np.testing.assert_array_equal(client.infer("doubler", [x]).as_numpy("y"), [[3.0, -4.0]])


def test_an_imported_graph_is_described_like_any_model(served):
    server, client = served
    metadata = client.get_model_metadata("scaler")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("x", "FP32", [-1, 3])]
    assert [t["name"] for t in metadata["outputs"]] == ["y", "s"]
    assert client.is_model_ready("scaler") and client.get_model_config("scaler")["input"][0]["name"] == "x"
    import httpx

    listed = {model["name"]: model for model in httpx.get(f"{server.url}/models", timeout=30).json()["models"]}
    assert {"digits", "sentiment", "denoise", "scaler", "fixed-scaler"} <= set(listed)
    assert listed["scaler"]["labels"] == ["a", "b", "c"] and listed["scaler"]["summary"] == "y = x * w"


def test_a_graph_with_a_fixed_batch_axis_runs_each_request_alone(served):
    _, client = served
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_allclose(infer(client, "fixed-scaler", x, binary=True)["y"], x * np.array(WEIGHTS))
    with pytest.raises(triton.InferenceServerException) as wrong:
        infer(client, "fixed-scaler", np.ones((3, 3), dtype=np.float32), binary=True)
    assert wrong.value.status() == "400" and "shape" in wrong.value.message()


@pytest.mark.parametrize(
    ("make_file", "name", "fragment"),
    [
        (lambda d: (d / "text.onnx").write_bytes(b"not a model") and d / "text.onnx", "junk", "not a valid ONNX model"),
        (lambda d: scaler(d / "s.onnx"), "digits", "built-in model"),
        (lambda d: scaler(d / "s.onnx"), "Bad Name", "lower-case"),
        (lambda d: string_identity(d / "t.onnx"), "strings", "not served"),
        (lambda d: d / "missing.onnx", "missing", "not a file"),
        (lambda d: newer_than_the_runtime(d / "future.onnx"), "future", "loads IR version <= "),
    ],
    ids=["not_onnx", "clashing_name", "bad_name", "unsupported_datatype", "missing_file", "newer_than_runtime"],
)
def test_refused_imports_say_why_and_write_nothing(home, tmp_path, make_file, name, fragment):
    before = store_listing(home)
    refused = import_onnx(home, str(make_file(tmp_path)), "--name", name)
    assert refused.returncode != 0 and fragment in refused.stderr, refused.stderr
    if name == "future":  # names what the runtime takes and how to export for it
        assert "opset 99" in refused.stderr and "opset_version=" in refused.stderr
    assert store_listing(home) == before


def test_importing_a_served_name_again_needs_replace(home, tmp_path, served):
    again = import_onnx(home, str(scaler(tmp_path / "again.onnx")), "--name", "scaler")
    assert again.returncode != 0 and "--replace" in again.stderr
