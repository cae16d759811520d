"""The checked-in gRPC code is what the pinned grpcio-tools generates from service/protocols/oip/inference.proto, and
the proto keeps the Open Inference Protocol's names and field numbers (what makes Triton's clients work).

Our generated module and tritonclient.grpc's declare the same `inference.*` symbols, and one process cannot hold
both: the descriptor is read in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.operations.launch import ROOT

OIP = Path("service/protocols/oip")

# run in a child: another test in this pytest process may have imported tritonclient.grpc, whose generated module
# declares the same `inference.*` symbols in protobuf's default pool
DESCRIBE = """
import json
from service.protocols.oip import inference_pb2 as pb

def numbers(message):
    return {field.name: field.number for field in message.DESCRIPTOR.fields}

service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
contents = sorted(pb.InferTensorContents.DESCRIPTOR.fields, key=lambda field: field.number)
print(json.dumps({"service": service.full_name, "methods": list(service.methods_by_name),
                  "ModelInferRequest": numbers(pb.ModelInferRequest),
                  "ModelInferResponse": numbers(pb.ModelInferResponse),
                  "InferTensorContents": [field.name for field in contents]}))
"""


def test_the_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", str(OIP / "inference.proto")], cwd=ROOT, check=True)
    for name in ("inference_pb2.py", "inference_pb2.pyi"):
        assert (tmp_path / OIP / name).read_text() == (ROOT / OIP / name).read_text(), f"run `make grpc-code` ({name})"


def test_the_protocol_s_names_and_field_numbers():
    described = json.loads(subprocess.run([sys.executable, "-c", DESCRIBE], cwd=ROOT, check=True, capture_output=True,
                                          text=True).stdout)
    assert described["service"] == "inference.GRPCInferenceService"
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelConfig",
            "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} <= \
        set(described["methods"])
    assert described["ModelInferRequest"] == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                                              "inputs": 5, "outputs": 6, "raw_input_contents": 7}
    assert described["ModelInferResponse"] == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                                               "outputs": 5, "raw_output_contents": 6}
    assert described["InferTensorContents"] == ["bool_contents", "int_contents", "int64_contents", "uint_contents",
                                                "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"]
