"""Models that live: loaded, swapped, split and rolled back while a real two-worker server serves, through Triton's
own client (tritonclient), the HTTP API and the `python -m service.store` command; bad models and hostile uploads
refused or isolated, with no worker restart.

The models are built here with onnx.helper: a scaler y = x * w (its versions differ in w, so every answer says which
version gave it), and a classifier whose versions disagree on some inputs (for the shadow's agreement).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper

from service.operations.launch import ROOT
from service.runtime.state import WORKERS, live_workers
from tests.e2e.conftest import private_home

pytestmark = pytest.mark.e2e
CONVERGED_WITHIN_S = 10.0  # every worker serves a change within 0.5 s of polling plus the model's load: 10 s is slack
KEY = "repository-key-0123456789abcdef"


def onnx_bytes(graph: onnx.GraphProto, opset: int = 17) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def scaler(weight: float) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [weight])
    return onnx_bytes(helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "scaler", [x], [y], [w]))


def classifier(weights: list[float]) -> bytes:
    """probabilities = softmax(x * weights), label = argmax: versions with other weights disagree on some rows."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], weights)
    nodes = [helper.make_node("Mul", ["x", "w"], ["scaled"]), helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    return onnx_bytes(helper.make_graph(nodes, "classifier", [x], [probabilities, label], [w]))


def reflect_padder() -> bytes:
    """Pads its input by reflection, as an STFT front end does (silero-vad): fails on an axis of length 1 - on the
    zeros with every named axis set to 1 that a model is warmed up with when no example is given."""
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])
    y = helper.make_tensor_value_info("padded", TensorProto.FLOAT, ["batch", "padded_samples"])
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 2, 0, 2])
    return onnx_bytes(helper.make_graph([helper.make_node("Pad", ["audio", "pads"], ["padded"], mode="reflect")],
                                        "padder", [x], [y], [pads]))


def save(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def home(model_home, tmp_path_factory) -> Path:
    return private_home(model_home, tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def server(start_server, home):
    """Two workers (convergence is between processes), model control on, loopback only (no API key); both started
    (ready answers once one is: on a loaded machine the other may still be loading its models)."""
    started = start_server(home=home, workers="2", model_control="explicit")
    wait_until(lambda: len(live_workers(home / "repository")) == 2, seconds=180)
    return started


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def tc(server):
    triton_client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)
    yield triton_client
    triton_client.close()


def infer_scaler(url: str, model: str, row: list[float], version: str | None = None) -> tuple[list[float], str]:
    """One request on a new connection (so it may land on any worker): (y, the version that answered)."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": row}]}
    answer = httpx.post(url + path, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output["data"] for output in answer.json()["outputs"]}
    return outputs["y"], answer.json()["model_version"]


def served_everywhere(url: str, model: str, weight: float, tries: int = 12) -> bool:
    """Whether `tries` requests on fresh connections (both workers, in all likelihood) all get this weight's answer."""
    try:
        return all(infer_scaler(url, model, [1, 2, 3])[0] == [weight, 2 * weight, 3 * weight] for _ in range(tries))
    except AssertionError:
        return False


def wait_until(condition, seconds: float = CONVERGED_WITHIN_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s")


def load(tc, name: str, content: bytes, config: dict | None = None) -> None:
    tc.load_model(name, config=json.dumps(config or {}), files={"file:1/model.onnx": content})


def load_over_http(url: str, name: str, content: bytes) -> None:
    """The same load as tritonclient's, in the body it sends (tritonclient's gevent cannot run in a worker thread)."""
    body = {"parameters": {"config": "{}", "file:1/model.onnx": base64.b64encode(content).decode()}}
    answer = httpx.post(f"{url}/v2/repository/models/{name}/load", json=body, timeout=120)
    assert answer.status_code == 200, answer.text


def test_tritonclient_loads_a_model_sent_in_the_request_infers_reads_statistics_and_unloads_it(server, tc):
    workers = sorted(p.pid for p in server.workers())
    load(tc, "sent", scaler(2.0))
    assert tc.is_model_ready("sent")
    x = triton.InferInput("x", [2, 3], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3], [-1, 0, 0.5]], dtype=np.float32))
    np.testing.assert_array_equal(tc.infer("sent", [x]).as_numpy("y"), [[2, 4, 6], [-2, 0, 1]])
    index = {entry["name"]: entry for entry in tc.get_model_repository_index()}
    assert index["sent"]["state"] == "READY" and index["digits"]["state"] == "READY"
    (stats,) = tc.get_inference_statistics("sent")["model_stats"]
    assert stats["name"] == "sent" and stats["inference_count"] >= 2 and stats["inference_stats"]["success"]["count"] >= 1
    tc.unload_model("sent")
    wait_until(lambda: httpx.get(f"{server.url}/v2/models/sent", timeout=10).status_code == 404)
    assert not tc.is_model_ready("sent")
    assert sorted(p.pid for p in server.workers()) == workers, "a worker restarted"


def test_the_grpc_client_loads_infers_reads_statistics_and_unloads(server):
    """The same through tritonclient.grpc: the repository extension over the Open Inference Protocol's gRPC."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(server.grpc_target)
    client.load_model("sent-grpc", config="{}", files={"file:1/model.onnx": scaler(4.0)})
    assert client.is_model_ready("sent-grpc")
    x = triton_grpc.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
    np.testing.assert_array_equal(client.infer("sent-grpc", [x]).as_numpy("y"), [[4, 8, 12]])
    (stats,) = client.get_inference_statistics("sent-grpc", as_json=True)["model_stats"]
    assert stats["name"] == "sent-grpc" and int(stats["inference_count"]) == 1
    client.unload_model("sent-grpc")
    assert not client.is_model_ready("sent-grpc")
    client.close()


def test_every_worker_serves_a_load_and_a_swap_within_the_bound(server, tc):
    load(tc, "swapped", scaler(3.0))
    print(f"load: every worker served it after {wait_until(lambda: served_everywhere(server.url, 'swapped', 3.0)):.2f} s")
    load(tc, "swapped", scaler(5.0))
    print(f"swap: every worker served it after {wait_until(lambda: served_everywhere(server.url, 'swapped', 5.0)):.2f} s")


def test_a_model_imported_with_the_command_is_served_without_a_restart(server, home, tmp_path):
    command = [sys.executable, "-m", "service.store", "import-onnx", str(save(tmp_path / "c.onnx", scaler(7.0))),
               "--name", "from-command"]
    finished = subprocess.run(command, env={**os.environ, "BENTOML_HOME": str(home)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr
    print(f"command: every worker served it after {wait_until(lambda: served_everywhere(server.url, 'from-command', 7.0)):.2f} s")


def test_a_version_swapped_under_load_fails_no_request(server, tc):
    load(tc, "under-load", scaler(1.0))
    wait_until(lambda: served_everywhere(server.url, "under-load", 1.0))
    answers: list[tuple[int, str]] = []

    async def hammer(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as session:
            body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
            while not stop.is_set():
                response = await session.post("/v2/models/under-load/infer", json=body)
                answers.append((response.status_code, response.json().get("model_version", response.text[:100])))

    async def scenario() -> None:
        stop = asyncio.Event()
        callers = [asyncio.ensure_future(hammer(stop)) for _ in range(8)]
        for weight in (2.0, 3.0, 4.0):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(load_over_http, server.url, "under-load", scaler(weight))
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*callers)

    asyncio.run(scenario())
    failed = [answer for answer in answers if answer[0] != 200]
    versions = {version for status, version in answers if status == 200}
    print(f"swap under load: {len(answers)} requests, {len(failed)} failed, answered by {len(versions)} versions")
    assert not failed and len(answers) > 100 and len(versions) >= 3


def test_a_90_10_canary_splits_traffic_within_3_points_and_rolls_back(server, client, tc):
    load(tc, "canaried", scaler(1.0))
    stable = client.get("/v2/models/canaried").json()["versions"][0]
    load(tc, "canaried", scaler(10.0), config={"default": False})
    versions = client.get("/v2/models/canaried").json()["versions"]
    (candidate,) = set(versions) - {stable}
    answer = client.post("/v2/repository/models/canaried/traffic",
                         json={"canary": {"version": candidate, "weight": 0.1}})
    assert answer.status_code == 200 and answer.json()["canary"] == {"version": candidate, "weight": 0.1}
    wait_until(lambda: all(client.get("/models").status_code == 200 for _ in range(2)))
    time.sleep(1.0)  # every worker has the split

    async def sample(count: int, callers: int = 16) -> list[str]:
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
        seen: list[str] = []

        async def caller(session: httpx.AsyncClient) -> None:
            while len(seen) < count:
                response = await session.post("/v2/models/canaried/infer", json=body)
                assert response.status_code == 200, response.text
                seen.append(response.json()["model_version"])

        async with httpx.AsyncClient(base_url=server.url, timeout=60) as session:
            await asyncio.gather(*(caller(session) for _ in range(callers)))
        return seen[:count]

    seen = asyncio.run(sample(2000))
    share = seen.count(candidate) / len(seen)
    print(f"canary share over 2,000 requests: {share:.3f}")
    assert abs(share - 0.10) <= 0.03
    assert set(seen) == {stable, candidate}
    assert client.post(f"/v2/repository/models/canaried/versions/{candidate}/promote").json()["default"] == candidate
    rolled = client.post("/v2/repository/models/canaried/rollback").json()
    assert rolled["default"] == stable and rolled["canary"] is None
    wait_until(lambda: served_everywhere(server.url, "canaried", 1.0))


def test_a_shadows_agreement_equals_the_same_computation_offline(server, client, tc):
    default_weights, shadow_weights = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    load(tc, "shadowed", classifier(default_weights))
    load(tc, "shadowed", classifier(shadow_weights), config={"default": False})
    (default,) = [m for m in client.get("/models").json()["models"] if m["name"] == "shadowed"]
    shadow = next(v for v in default["versions"] if v != default["version"])
    assert client.post("/v2/repository/models/shadowed/traffic", json={"shadow": shadow}).status_code == 200
    time.sleep(1.5)
    rows = np.random.default_rng(7).normal(size=(200, 3)).astype(np.float32)
    for row in rows:
        answer = client.post("/v2/models/shadowed/infer", json={
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": row.tolist()}]})
        assert answer.status_code == 200 and answer.json()["model_version"] == default["version"]

    def label(weights):
        return (rows * np.array(weights, dtype=np.float32)).argmax(axis=1)

    offline = float((label(default_weights) == label(shadow_weights)).mean())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = tc.get_inference_statistics("shadowed", model_version=shadow)["model_stats"][0]["shadow"]
        if stats["compared"] == 200:
            break
        time.sleep(0.3)
    print(f"shadow agreement served {stats['agreement']:.3f} vs offline {offline:.3f} on 200 rows")
    assert stats["compared"] == 200 and stats["agreement"] == pytest.approx(offline, abs=1e-9)
    metrics = client.get("/metrics").text
    assert f'modelserver_shadow_agreed_total{{model="shadowed",version="{shadow}"}}' in metrics


def test_memory_comes_back_after_50_load_unload_cycles(server, client, tc):
    load(tc, "cycled", scaler(2.0))
    tc.unload_model("cycled")
    time.sleep(1.0)
    before = server.rss_bytes()
    for _ in range(50):
        assert client.post("/v2/repository/models/cycled/load").status_code == 200
        assert client.post("/v2/repository/models/cycled/unload").status_code == 200
    time.sleep(2.0)  # the other worker follows, then frees
    after = server.rss_bytes()
    print(f"RSS before 50 load/unload cycles {before / 2**20:.0f} MB, after {after / 2**20:.0f} MB "
          f"({after / before - 1:+.1%})")
    assert after <= before * 1.10


def test_a_model_that_cannot_run_on_zeros_is_refused_with_the_runtimes_reason_unless_given_an_example(client, tc):
    content = base64.b64encode(reflect_padder()).decode()
    refused = client.post("/v2/repository/models/padder/load", json={"parameters": {"file:1/model.onnx": content}})
    assert refused.status_code == 422 and "does not run" in refused.json()["error"]
    assert "reflect" in refused.json()["error"].lower() or "pad" in refused.json()["error"].lower()
    warmup = {"model_warmup": [{"name": "audio", "batch_size": 1, "inputs": {
        "audio": {"data_type": "TYPE_FP32", "dims": [16], "zero_data": True}}}]}
    loaded = client.post("/v2/repository/models/padder/load", json={"parameters": {
        "file:1/model.onnx": content, "config": json.dumps(warmup)}})
    assert loaded.status_code == 200, loaded.text
    assert tc.is_model_ready("padder")


def test_a_model_that_fails_its_warm_up_in_the_server_is_isolated(start_server, model_home, tmp_path):
    """Put into the repository by hand, bypassing the proof: the server marks it failed and serves the rest."""
    home = private_home(model_home, tmp_path)
    from service.runtime.intake import Submission, take_in
    from service.runtime.state import ModelState, changing_state

    repository = home / "repository"
    version = take_in(repository, Submission("padder", {"model.onnx": reflect_padder()}, example_shapes={"audio": [1, 16]}),
                      memory_mb=2048, timeout_s=120)
    metadata = repository / "padder" / version / "metadata.json"
    described = json.loads(metadata.read_text())
    described["inputs"][0]["example_shape"] = None  # warm-up on zeros with each named axis 1: fails like silero-vad's
    metadata.write_text(json.dumps(described))
    with changing_state(repository) as state:
        state.models["padder"] = ModelState(versions=[version], default=version)
    server = start_server(home=home, workers="2")
    workers = sorted(p.pid for p in server.workers())
    with httpx.Client(base_url=server.url, timeout=60) as client:
        listed = {model["name"]: model for model in client.get("/models").json()["models"]}
        assert listed["padder"]["ready"] is False and "reflect" in listed["padder"]["error"].lower()
        assert client.get("/v2/models/padder/ready").status_code == 503
        assert client.get("/readyz").status_code == 200
        from tests.e2e.calls import every_endpoint_answers_correctly

        assert every_endpoint_answers_correctly(client)
    assert sorted(p.pid for p in server.workers()) == workers


def test_a_runtime_failure_is_a_json_500_naming_the_model_and_no_worker_restarts(server, client, tc):
    """A graph that reshapes to a fixed size: any other size fails inside onnxruntime, at inference."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    load(tc, "brittle", onnx_bytes(helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "brittle",
                                                      [x], [y], [shape])),
         config={"model_warmup": [{"batch_size": 1, "inputs": {"x": {"dims": [4]}}}]})
    workers = sorted(p.pid for p in server.workers())
    failed = client.post("/v2/models/brittle/infer", json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                                                         "data": [1, 2, 3]}]})
    assert failed.status_code == 500 and failed.headers["content-type"] == "application/json"
    assert "brittle model failed" in failed.json()["error"]
    assert 'modelserver_server_errors_total{model="brittle"}' in client.get("/metrics").text
    assert sorted(p.pid for p in server.workers()) == workers


# hostile uploads ------------------------------------------------------------------------------------------------


def external_data_outside(tmp_path: Path) -> bytes:
    """A graph whose weight is "external data" at ../../outside.bin: onnxruntime must refuse to read it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    for key, value in (("location", "../../outside.bin"), ("offset", "0"), ("length", "4")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return onnx_bytes(helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "outside", [x], [y], [weight]))


def custom_op() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node("Exfiltrate", ["x"], ["y"], domain="org.example.custom")
    model = helper.make_model(helper.make_graph([node], "custom", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example.custom", 1)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("file_name", ["file:1/../../../escape.onnx", "file:../model.onnx", "file:/etc/model.onnx",
                                       "file:1/a/model.onnx", "file:1/.hidden", "file:x/model.onnx"])
def test_file_names_never_leave_the_models_folder(client, home, file_name):
    before = sorted(str(path) for path in home.rglob("*"))
    content = base64.b64encode(scaler(2.0)).decode()
    answer = client.post("/v2/repository/models/escaper/load", json={"parameters": {file_name: content}})
    assert answer.status_code == 400 and "file" in answer.json()["error"].lower(), answer.text
    assert not (home.parent / "escape.onnx").exists() and not Path("/etc/model.onnx").exists()
    assert sorted(str(path) for path in home.rglob("*") if ".staging" not in str(path)) == \
        [path for path in before if ".staging" not in path]


@pytest.mark.parametrize(("make", "fragment"), [
    (external_data_outside, "data"), (lambda _: custom_op(), "exfiltrate"),
], ids=["external_data_outside_the_upload", "custom_op_domain"])
def test_dangerous_graphs_are_refused_by_the_runtime(client, tmp_path, make, fragment):
    (tmp_path / "outside.bin").write_bytes(b"\x00\x00\x00\x40")
    answer = client.post("/v2/repository/models/dangerous/load", json={"parameters": {
        "file:1/model.onnx": base64.b64encode(make(tmp_path)).decode()}})
    assert answer.status_code == 422 and fragment in answer.json()["error"].lower(), answer.text


@pytest.mark.parametrize("name", ["..", "UPPER", "a/b", "x" * 70])
def test_model_names_are_checked_like_path_components(client, name):
    answer = client.post(f"/v2/repository/models/{name}/load", json={})
    assert answer.status_code in (400, 404), answer.text


def test_an_upload_over_the_model_size_limit_gets_413(start_server, model_home, tmp_path):
    small = start_server(home=private_home(model_home, tmp_path), model_control="explicit", max_model_bytes="4096")
    big = base64.b64encode(b"\x00" * 8192).decode()
    answer = httpx.post(f"{small.url}/v2/repository/models/big/load", json={"parameters": {"file:1/model.onnx": big}},
                        timeout=60)
    assert answer.status_code == 413


def lagging_worker(repository: Path, seconds: float) -> threading.Timer:
    """A worker that is alive (fresh heartbeat file) but serves an older state for `seconds`, then stops, as a
    worker still starting on a loaded machine: a change answers only once it is gone or caught up."""
    worker = repository / WORKERS / "starting-worker-1"
    worker.parent.mkdir(parents=True, exist_ok=True)
    worker.write_text(json.dumps([0, 0]))
    gone = threading.Timer(seconds, worker.unlink)
    gone.start()
    return gone


def test_a_load_waiting_for_the_workers_is_answered_past_the_request_timeout_not_504(start_server, model_home, tmp_path):
    """A load answers once every worker serves it, which can take longer than MODEL_SERVER_REQUEST_TIMEOUT_S (the
    CI runner's second worker was still starting): the load has its own deadline, over HTTP and gRPC alike."""
    import tritonclient.grpc as triton_grpc

    home = private_home(model_home, tmp_path)
    short = start_server(home=home, model_control="explicit", request_timeout_s="1")
    lagging = lagging_worker(home / "repository", seconds=3)
    started = time.monotonic()
    load_over_http(short.url, "patient", scaler(2.0))
    assert time.monotonic() - started > 1.0 and not lagging.is_alive()  # it waited for the worker, past 1 s
    assert infer_scaler(short.url, "patient", [1, 2, 3])[0] == [2, 4, 6]
    client = triton_grpc.InferenceServerClient(short.grpc_target)
    lagging = lagging_worker(home / "repository", seconds=3)
    started = time.monotonic()
    client.load_model("patient-grpc", config="{}", files={"file:1/model.onnx": scaler(3.0)})
    assert time.monotonic() - started > 1.0 and not lagging.is_alive() and client.is_model_ready("patient-grpc")
    client.close()


def test_model_control_is_off_by_default_and_needs_the_key_when_one_is_set(start_server, model_home, tmp_path):
    default = start_server(home=private_home(model_home, tmp_path / "a"))
    off = httpx.post(f"{default.url}/v2/repository/models/x/load", json={}, timeout=30)
    assert off.status_code == 403 and "MODEL_SERVER_MODEL_CONTROL=explicit" in off.json()["error"]
    assert httpx.post(f"{default.url}/v2/repository/index", timeout=30).status_code == 200
    keyed = start_server(home=private_home(model_home, tmp_path / "b"), model_control="explicit", api_key=KEY)
    content = base64.b64encode(scaler(2.0)).decode()
    body = {"parameters": {"file:1/model.onnx": content}}
    assert httpx.post(f"{keyed.url}/v2/repository/models/keyed/load", json=body, timeout=60).status_code == 401
    loaded = httpx.post(f"{keyed.url}/v2/repository/models/keyed/load", json=body, headers={"X-API-Key": KEY}, timeout=60)
    assert loaded.status_code == 200, loaded.text


def test_model_control_without_a_key_answers_only_loopback():
    from service.operations.frontdoor import Call
    from service.operations.settings import Settings
    from service.protocols.repository import ModelControl
    from service.runtime.repository import Repository

    control = ModelControl(Repository(), ROOT / "runs", Settings(model_control="explicit"), lambda name: None, frozenset())
    control.allowed(Call({"client": ("127.0.0.1", 5000)}, b"", {}))
    from modelcore.errors import InputError

    with pytest.raises(InputError, match="only on loopback"):
        control.allowed(Call({"client": ("10.1.2.3", 5000)}, b"", {}))
