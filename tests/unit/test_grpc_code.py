"""The checked-in gRPC code is what the pinned grpcio-tools generates from service/protocols/oip/inference.proto, and
the proto keeps the Open Inference Protocol's names and field numbers (what makes Triton's clients work).

This file never imports tritonclient.grpc: its generated module declares the same `inference.*` symbols, and one
process cannot hold both (the gRPC tests talk to a server in another process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.operations.launch import ROOT

OIP = Path("service/protocols/oip")


def test_the_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", str(OIP / "inference.proto")], cwd=ROOT, check=True)
    for name in ("inference_pb2.py", "inference_pb2.pyi"):
        assert (tmp_path / OIP / name).read_text() == (ROOT / OIP / name).read_text(), f"run `make grpc-code` ({name})"


def test_the_protocol_s_names_and_field_numbers():
    from service.protocols.oip import inference_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelConfig",
            "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} <= \
        set(service.methods_by_name)
    numbers = {field.name: field.number for field in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert numbers == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
                       "raw_input_contents": 7}
    numbers = {field.name: field.number for field in pb.ModelInferResponse.DESCRIPTOR.fields}
    assert numbers == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5,
                       "raw_output_contents": 6}
    contents = [field.name for field in sorted(pb.InferTensorContents.DESCRIPTOR.fields, key=lambda f: f.number)]
    assert contents == ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                        "fp32_contents", "fp64_contents", "bytes_contents"]
