"""The Open Inference Protocol over gRPC, through Triton's own clients (tritonclient.grpc, sync and asyncio) and its
generated stubs, against a real server: every model answers what the HTTP v2 route answers for the same input, in
raw and typed tensors; errors carry the HTTP 400's words as INVALID_ARGUMENT; the API key, admission control, the
drain, request ids, metrics and the health service work as on HTTP; malformed messages never get INTERNAL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
import tritonclient.http as th
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtest.profiles.denoise import noisy_png
from service.operations.launch import ROOT

pytestmark = pytest.mark.e2e
KEY = "grpc-key-0123456789abcdef"
TEXTS = np.array([b"I love this, best day ever", b"this is awful", b"the meeting is at noon"], dtype=object)


@pytest.fixture(scope="module")
def grpc_client(server):
    client = tg.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http_client(server):
    client = th.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


CASES = {  # case -> (model, input name, datatype, the input from the digits fixture)
    "digits-image": ("digits", "image", "BYTES", lambda digits: digits[1]),
    "digits-pixels": ("digits", "pixels", "FP32", lambda digits: digits[0]),
    "sentiment": ("sentiment", "text", "BYTES", lambda _: TEXTS),
    "denoise": ("denoise", "image", "BYTES", lambda _: np.array([noisy_png()], dtype=object)),
}


OUTPUTS = {"digits": ("probabilities", "label", "ood_score", "in_distribution"), "sentiment": ("probabilities", "label"),
           "denoise": ("image",)}


def answers(client, module, model: str, name: str, datatype: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of one inference through a tritonclient module (tritonclient.grpc or .http)."""
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor])
    return {output: result.as_numpy(output) for output in OUTPUTS[model]}


@pytest.mark.parametrize("case", CASES)
def test_every_model_answers_over_grpc_what_http_answers(grpc_client, http_client, digits, case):
    assert_grpc_answers_what_http_answers(grpc_client, http_client, digits, case)


def assert_grpc_answers_what_http_answers(grpc_client, http_client, digits, case: str) -> None:
    """One CASES entry through tritonclient.grpc and tritonclient.http: the same outputs (also the container test's)."""
    model, name, datatype, make = CASES[case]
    array = make(digits)
    over_grpc = answers(grpc_client, tg, model, name, datatype, array)
    over_http = answers(http_client, th, model, name, datatype, array)
    assert set(over_grpc) == set(over_http) and over_grpc
    for output, value in over_http.items():
        if value.dtype == object:
            assert list(over_grpc[output].ravel()) == list(value.ravel()), output
        else:
            np.testing.assert_allclose(over_grpc[output], value, rtol=1e-5, atol=1e-6, err_msg=output)


def typed_request(model: str, name: str, datatype: str, field: str, values, shape) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def test_typed_contents_answer_what_raw_contents_answer(stub, grpc_client, digits):
    array = digits[0]
    typed = stub.ModelInfer(typed_request("digits", "pixels", "FP32", "fp32_contents", array.ravel().tolist(), array.shape))
    raw = answers(grpc_client, tg, "digits", "pixels", "FP32", array)
    labels = [o for o in typed.outputs].index(next(o for o in typed.outputs if o.name == "label"))
    assert np.frombuffer(typed.raw_output_contents[labels], dtype="<i8").tolist() == raw["label"].tolist()
    texts = stub.ModelInfer(typed_request("sentiment", "text", "BYTES", "bytes_contents", list(TEXTS), [len(TEXTS)]))
    assert texts.model_name == "sentiment" and len(texts.raw_output_contents) == 2


def test_the_asyncio_client_answers_concurrent_calls(server, http_client, digits):
    files = list(digits[1]) * 5

    async def scenario() -> list[list[int]]:
        client = tg_aio.InferenceServerClient(server.grpc_target)
        try:
            async def one(file: bytes):
                tensor = tg_aio.InferInput("image", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([file], dtype=object))
                return (await client.infer("digits", [tensor])).as_numpy("label").tolist()

            assert await client.is_server_ready()
            return await asyncio.gather(*(one(file) for file in files))
        finally:
            await client.close()

    expected = answers(http_client, th, "digits", "image", "BYTES", digits[1])["label"].tolist()
    assert asyncio.run(scenario()) == [[label] for label in expected] * 5


def grpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_a_bad_input_gets_invalid_argument_with_the_http_words(stub, server):
    request = typed_request("digits", "pixels", "FP32", "fp32_contents", [0.0] * 27 * 28, [1, 27, 28])
    error = grpc_error(lambda: stub.ModelInfer(request))
    http = httpx.post(f"{server.url}/v2/models/digits/infer", timeout=30, json={
        "inputs": [{"name": "pixels", "shape": [1, 27, 28], "datatype": "FP32", "data": [0.0] * 27 * 28}]})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and http.status_code == 400
    assert error.details() == http.json()["error"]


@pytest.mark.parametrize(("request_", "code", "words"), [
    (service_pb2.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "Unknown model 'nope'"),
    (typed_request("sentiment", "txt", "BYTES", "bytes_contents", [b"x"], [1]), grpc.StatusCode.INVALID_ARGUMENT,
     "Unknown input 'txt'"),
    (typed_request("sentiment", "text", "FP16", "fp32_contents", [1.0], [1]), grpc.StatusCode.INVALID_ARGUMENT,
     "raw_input_contents"),
    (typed_request("digits", "pixels", "UINT8", "uint_contents", [300] * 784, [1, 28, 28]),
     grpc.StatusCode.INVALID_ARGUMENT, "do not fit UINT8"),
], ids=["unknown_model", "unknown_input", "fp16_typed", "out_of_range"])
def test_errors_say_what_to_send(stub, request_, code, words):
    error = grpc_error(lambda: stub.ModelInfer(request_))
    assert error.code() == code and words in error.details(), error.details()


def test_raw_contents_must_match_the_inputs(stub):
    request = typed_request("sentiment", "text", "BYTES", "bytes_contents", [], [1])
    request.raw_input_contents.extend([b"\x01\x00\x00\x00a", b"extra"])
    error = grpc_error(lambda: stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "one per input" in error.details()


def test_metadata_config_and_statistics_equal_the_http_answers(grpc_client, http_client):
    assert grpc_client.get_model_metadata("sentiment", as_json=True)["inputs"] == \
        [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    config = grpc_client.get_model_config("digits", as_json=True)["config"]
    http_config = http_client.get_model_config("digits")
    assert config["max_batch_size"] == http_config["max_batch_size"]
    assert [i["name"] for i in config["input"]] == [i["name"] for i in http_config["input"]]
    metadata = grpc_client.get_server_metadata(as_json=True)
    assert metadata["name"] == "modelserver" and "model_repository" in metadata["extensions"]
    index = {entry["name"] for entry in grpc_client.get_model_repository_index(as_json=True)["models"]}
    assert {"digits", "sentiment", "denoise"} <= index
    (stats,) = grpc_client.get_inference_statistics("sentiment", as_json=True)["model_stats"]
    assert stats["name"] == "sentiment" and int(stats["inference_count"]) >= 1


def test_request_ids_are_echoed_and_logged_and_calls_are_counted(server, stub):
    request = typed_request("sentiment", "text", "BYTES", "bytes_contents", [b"fine"], [1])
    _, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "grpc-find-me-42"),))
    assert ("x-request-id", "grpc-find-me-42") in call.initial_metadata()
    deadline = time.monotonic() + 10
    while "grpc-find-me-42" not in server.log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert '"GRPC ModelInfer" 200' in server.log.read_text(errors="replace")
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'endpoint="grpc:ModelInfer"' in metrics and 'model="sentiment"' in metrics


def test_the_readme_s_grpc_example_runs_unchanged(server):
    """The README's tritonclient.grpc snippet, as a user copies it, pointed at this server's gRPC port."""
    readme = (ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(import numpy as np, tritonclient\.grpc as triton.*?)```", readme, re.S)
    assert '"127.0.0.1:3001"' in snippet
    finished = subprocess.run([sys.executable, "-c", snippet.replace('"127.0.0.1:3001"', f'"{server.grpc_target}"')],
                              capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[b'positive' b'negative']"


def test_the_health_service_answers_for_probes(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for service in ("", "inference.GRPCInferenceService"):
            assert check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_messages_never_get_internal(server):
    """Garbage bytes and random well-formed messages: every answer a client error, the server serving after."""
    rng = np.random.default_rng(5)
    codes = {}
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(150):
            try:
                raw(rng.bytes(int(rng.integers(1, 300))), timeout=30)
            except grpc.RpcError as error:
                codes[error.code()] = codes.get(error.code(), 0) + 1
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(300):
            try:
                stub.ModelInfer(random_request(rng), timeout=30)
            except grpc.RpcError as error:
                codes[error.code()] = codes.get(error.code(), 0) + 1
                assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()
    print(f"\nfuzz answers by code: { {code.name: count for code, count in codes.items()} }")
    assert grpc.StatusCode.INTERNAL not in codes and grpc.StatusCode.UNKNOWN not in codes
    assert tg.InferenceServerClient(server.grpc_target).is_model_ready("digits")


DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES", "BF16", "junk", ""]


def random_request(rng) -> service_pb2.ModelInferRequest:
    model = rng.choice(["digits", "sentiment", "denoise", "digits", "sentiment", "nope", ""])
    version = "" if rng.random() < 0.9 else str(rng.choice(["1", "zz"]))
    request = service_pb2.ModelInferRequest(model_name=str(model), model_version=version)
    for _ in range(int(rng.integers(0, 3))):
        shape = [int(v) for v in rng.choice([-1, 0, 1, 2, 28, 2**31, 2**62], size=int(rng.integers(0, 4)))]
        tensor = request.inputs.add(name=str(rng.choice(["pixels", "image", "text", "sigma", "x"])),
                                    datatype=str(rng.choice(DATATYPES)), shape=shape)
        kind = rng.integers(0, 4)
        if kind == 1:
            tensor.contents.fp32_contents.extend(rng.normal(size=int(rng.integers(0, 900))).tolist())
        elif kind == 2:
            tensor.contents.bytes_contents.extend([rng.bytes(int(rng.integers(0, 40))) for _ in range(int(rng.integers(0, 3)))])
        elif kind == 3:
            request.raw_input_contents.append(rng.bytes(int(rng.integers(0, 4000))))
    if rng.random() < 0.3:
        request.outputs.add(name=str(rng.choice(["label", "nothing", "image"])))
    return request


@pytest.fixture(scope="module")
def keyed(start_server):
    return start_server(api_key=KEY)


def test_the_api_key_is_required_as_metadata(keyed):
    client = tg.InferenceServerClient(keyed.grpc_target)
    tensor = tg.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"fine"], dtype=object))
    assert client.is_server_live()  # probes need no key, as /livez
    with pytest.raises(InferenceServerException, match="API key"):
        client.infer("sentiment", [tensor])
    with pytest.raises(InferenceServerException, match="API key"):
        client.infer("sentiment", [tensor], headers={"authorization": "Bearer wrong"})
    assert client.infer("sentiment", [tensor], headers={"authorization": f"Bearer {KEY}"}).as_numpy("label").shape == (1,)
    assert client.infer("sentiment", [tensor], headers={"x-api-key": KEY}).as_numpy("label").shape == (1,)


@pytest.fixture(scope="module")
def small(start_server):
    """One worker with room for 2 requests at once: two held HTTP requests fill it (gRPC shares the count)."""
    return start_server(workers="1", max_concurrent_requests="2", retry_after_s="3", diagnostics="true")


def hold_in_background(url: str, seconds: float, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(
        httpx.post(f"{url}/diagnostics/hold?seconds={seconds}", timeout=60).status_code))
    thread.start()
    return thread


def in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("modelserver_requests_in_progress{") and "diagnostics" in line)


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_at_capacity_a_call_gets_resource_exhausted_and_a_draining_worker_unavailable(small):
    request = typed_request("sentiment", "text", "BYTES", "bytes_contents", [b"fine"], [1])
    results: list[int] = []
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        holds = [hold_in_background(small.url, 4, results) for _ in range(2)]
        wait_for(lambda: in_flight(small.url) >= 2)
        try:
            stub.ModelInfer.with_call(request)
            pytest.fail("a call past capacity was answered")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "capacity" in error.details()
            assert ("retry-after", "3") in error.trailing_metadata()
        health = health_pb2_grpc.HealthStub(channel).Check
        os.kill(small.workers()[0].pid, signal.SIGTERM)  # drains: the holds in flight finish
        wait_for(lambda: health(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING)
        error = grpc_error(lambda: stub.ModelInfer(request))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in error.details()
        for thread in holds:
            thread.join()
    assert results == [200, 200]
