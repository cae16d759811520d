"""How the benchmark starts each server and what it sends each: the payload forms every server takes for the same
work (one PNG digit, one tweet, 32 tweets, a 256x256 noisy photo), and the servers with their commands.

A server is a command run with the repository on PYTHONPATH, in its own virtual environment (.bench/<venv>, made by
`make bench-tools`) or in the project's; it is ready when `ready_path` answers 200. Its rows are (workload, path,
payload): the payload forms are built once (loadtest/payloads.py builders) and sent by wrk.
"""

from __future__ import annotations

import base64
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from urllib3 import encode_multipart_formdata

from loadtest import payloads
from service.operations.launch import ROOT

BENCH = ROOT / ".bench"
GRPC_INFER = "gRPC ModelInfer"  # the rows sent over the Open Inference Protocol's gRPC (loadtest/grpc_load.py)
JSON = "application/json"


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def _v2_json(name: str, element: str, content_type: str) -> Payload:
    body = {"inputs": [{"name": name, "shape": [1], "datatype": "BYTES", "data": [element],
                        "parameters": {"content_type": content_type}}]}
    return Payload(json.dumps(body).encode(), JSON)


def _binary(body: tuple) -> Payload:
    data, content_type, *extra = body
    return Payload(data, content_type, tuple((extra[0] if extra else {}).items()))


@functools.cache
def payload(form: str) -> Payload:
    """One pre-encoded request body of a form: the first real digit, tweet or photo crop."""
    png = payloads.digit_png_bodies()[0][0]
    tweet = payloads.tweets()[0]
    forms: dict[str, Callable[[], Payload]] = {
        "digit-multipart": lambda: _binary(encode_multipart_formdata({"image": ("digit.png", png, "image/png")})),
        "digit-body": lambda: Payload(png, "image/png"),
        "digit-v2-binary": lambda: _binary(payloads.digit_v2_pngs()[0]),
        # Triton's shapes include the batch axis when the model batches: one element is [1, 1]
        "digit-v2-binary-batched": lambda: _binary(payloads.v2_binary_body([("image", "BYTES", [1, 1],
                                                                             payloads.bytes_element(png))])),
        "digit-v2-json-base64": lambda: _v2_json("image", base64.b64encode(png).decode(), "base64"),
        "digit-npy-64": lambda: _binary(payloads.digit_npys_64()[0]),
        "digit-v2-pixels-64": lambda: _binary(payloads.digit_v2_pixels_64()[0]),
        "tweet-json": lambda: Payload(json.dumps({"texts": [tweet]}).encode(), JSON),
        "tweets-32-json": lambda: _binary(payloads.tweet_bodies_32()[0]),
        "tweet-v2-binary": lambda: _binary(payloads.v2_binary_body([("text", "BYTES", [1], payloads.bytes_element(
            tweet.encode()))])),
        "tweet-v2-binary-batched": lambda: _binary(payloads.v2_binary_body([("text", "BYTES", [1, 1],
                                                                             payloads.bytes_element(tweet.encode()))])),
        "tweet-v2-json": lambda: _v2_json("text", tweet, "str"),
        "noisy-256-multipart": lambda: _binary(payloads.noisy_pngs_256()[0]),
        # gRPC: a serialized ModelInferRequest (loadtest/grpc_load.py sends it), the same tensors as the v2 rows
        "digit-grpc-raw": lambda: _grpc("digits", ("image", "BYTES", [1], payloads.bytes_element(png))),
        "tweet-grpc-raw": lambda: _grpc("sentiment", ("text", "BYTES", [1], payloads.bytes_element(tweet.encode()))),
        "digit-grpc-pixels-64": lambda: _grpc("digits", ("pixels", "UINT8", [64, 28, 28],
                                                         payloads.digit_images()[:64].tobytes())),
    }
    return forms[form]()


def _grpc(model: str, *tensors: tuple[str, str, list[int], bytes]) -> Payload:
    from service.protocols.oip import inference_pb2

    request = inference_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return Payload(request.SerializeToString(), "application/grpc")


@dataclass(frozen=True)
class Row:
    """One measured line: a workload (what is done), the path, and the payload form this server takes it in."""

    workload: str
    path: str
    form: str


@dataclass(frozen=True)
class PeerServer:
    name: str
    venv: str | None  # .bench/<venv>, or None for the project's own virtual environment
    command: Callable[[Path, int, Path], list[str]]  # (python, port, scratch folder) -> argv
    ready_path: str
    rows: tuple[Row, ...]
    description: str
    pausable: bool = True  # may be stopped (SIGSTOP) while another server is measured

    def python(self) -> Path:
        return BENCH / self.venv / "bin" / "python" if self.venv else Path(sys.executable)


DIGIT = "digits, one PNG"
TWEET = "sentiment, one text"
TWEETS = "sentiment, 32 texts"
PHOTO = "denoise, 256x256 photo"


def _mlserver(python: Path, port: int, scratch: Path) -> list[str]:
    """Write MLServer's settings files for this port, then `mlserver start` on them."""
    folder = scratch / "mlserver"
    configure = f"from pathlib import Path; from loadtest.peers.mlserver_app import configure; configure(Path('{folder}'), {port})"
    return ["bash", "-c", f'"{python}" -c "{configure}" && exec "{python.parent / "mlserver"}" start "{folder}"']


PEERS = (
    PeerServer("minimal FastAPI + onnxruntime", None,
               lambda python, port, _: [str(python), "-m", "uvicorn", "loadtest.peers.minimal:app", "--host", "127.0.0.1",
                                        "--port", str(port), "--workers", "2", "--log-level", "warning"],
               "/docs", (Row(DIGIT, "/digits/classify", "digit-multipart"),
                         Row(DIGIT, "/digits/classify-image", "digit-body"),
                         Row(TWEET, "/sentiment/classify", "tweet-json"), Row(TWEETS, "/sentiment/classify", "tweets-32-json"),
                         Row(PHOTO, "/denoise", "noisy-256-multipart")),
               "2 uvicorn workers, async handlers, 1 onnxruntime thread each, no batching (loadtest/peers/minimal.py)"),
    PeerServer("Triton (PyTriton)", "pytriton",
               lambda python, port, _: [str(python), "-m", "loadtest.peers.pytriton_app", str(port)],
               "/v2/health/ready", (Row(DIGIT, "/v2/models/digits/infer", "digit-v2-binary-batched"),
                                    Row(TWEET, "/v2/models/sentiment/infer", "tweet-v2-binary-batched")),
               "dynamic batching 64 / 2 ms, 2 instances per model, binary tensors (loadtest/peers/pytriton_app.py)",
               # Triton's Python backend talks to its stubs through shared memory with timed locks: a paused server
               # aborts (boost::interprocess::lock_exception) when resumed. It idles at under 1% of a core.
               pausable=False),
    PeerServer("MLServer", "mlserver", _mlserver, "/v2/health/ready",
               (Row(DIGIT, "/v2/models/digits/infer", "digit-v2-json-base64"),
                Row(TWEET, "/v2/models/sentiment/infer", "tweet-v2-json")),
               "adaptive batching 64 / 2 ms, 2 parallel workers, v2 JSON (loadtest/peers/mlserver_app.py)"),
    PeerServer("LitServe", "litserve", lambda python, port, _: [str(python), "-m", "loadtest.peers.litserve_app", str(port)],
               "/health", (Row(DIGIT, "/digits/classify", "digit-multipart"), Row(TWEET, "/sentiment/classify", "tweet-json")),
               "batching 64 / 2 ms, 2 workers (loadtest/peers/litserve_app.py)"),
    PeerServer("Ray Serve", "ray", lambda python, port, _: [str(python), "-m", "loadtest.peers.ray_app", str(port)],
               "/-/healthz", (Row(DIGIT, "/digits/classify-image", "digit-body"), Row(TWEET, "/sentiment/classify", "tweet-json")),
               "@serve.batch 64 / 2 ms, 2 replicas per model (loadtest/peers/ray_app.py)"),
    PeerServer("plain BentoML", "bentoml",
               lambda python, port, _: [str(python), "-m", "bentoml", "serve", "loadtest.peers.bentoml_app:Peer", "--host",
                                        "127.0.0.1", "--port", str(port)],
               "/readyz", (Row(DIGIT, "/digits/classify", "digit-multipart"), Row(TWEET, "/sentiment/classify", "tweet-json")),
               "2 workers, a public endpoint calling a batchable API (64 / 1 s) (loadtest/peers/bentoml_app.py)"),
)

OURS = (Row(DIGIT, "/digits/classify", "digit-multipart"), Row(DIGIT, "/digits/classify-image", "digit-body"),
        Row(DIGIT, "/v2/models/digits/infer", "digit-v2-binary"), Row(TWEET, "/sentiment/classify", "tweet-json"),
        Row(TWEET, "/v2/models/sentiment/infer", "tweet-v2-binary"), Row(TWEETS, "/sentiment/classify", "tweets-32-json"),
        Row(PHOTO, "/denoise", "noisy-256-multipart"), Row(DIGIT, GRPC_INFER, "digit-grpc-raw"),
        Row(TWEET, GRPC_INFER, "tweet-grpc-raw"))
BATCHES = (Row("digits, 64 per request", "/digits/classify-tensor", "digit-npy-64"),
           Row("digits, 64 per request", "/v2/models/digits/infer", "digit-v2-pixels-64"),
           Row("digits, 64 per request", GRPC_INFER, "digit-grpc-pixels-64"))
