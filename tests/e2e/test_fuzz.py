"""The whole OpenAPI spec fuzzed by the schemathesis command line, as an outside user would run it.

Default phases (examples, coverage, fuzzing) with the checks that the server never answers 5xx and that
every status code, content type and body it answers is the one the spec declares. Bounded: a fixed number
of examples per operation and a time limit. Passes only with zero failures, no worker restarted, and
correct answers afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.calls import every_endpoint_answers_correctly

pytestmark = pytest.mark.e2e

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES_PER_OPERATION = 60
TIME_LIMIT_S = 600
INFERENCE_PATHS = {"/digits/classify", "/digits/classify-image", "/digits/classify-tensor", "/digits/classify-arrays",
                   "/sentiment/classify", "/denoise"}


def schemathesis_command() -> str:
    """The schemathesis CLI installed beside this Python (the dev extra)."""
    return shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"


def test_the_spec_documents_every_inference_route(client):
    documented = set(client.get("/docs.json").json()["paths"])
    assert INFERENCE_PATHS | {"/models"} <= documented


def test_schemathesis_finds_no_server_error_and_no_answer_the_spec_does_not_declare(server, client, tmp_path):
    workers = sorted(p.pid for p in server.workers())
    operations = sum(len(methods) for methods in client.get("/docs.json").json()["paths"].values())
    command = [schemathesis_command(), "run", f"{server.url}/docs.json", "--checks", CHECKS,
               "--max-examples", str(EXAMPLES_PER_OPERATION), "--request-timeout", "60", "--no-color",
               "--suppress-health-check", "all", "--report", "junit", "--report-dir", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=TIME_LIMIT_S, cwd=tmp_path)
    summary = finished.stdout[-3000:]
    print(summary)

    assert finished.returncode == 0, summary + finished.stderr[-2000:]
    assert f"Tested: {operations}" in finished.stdout, "some documented operations were not fuzzed"
    assert sorted(p.pid for p in server.workers()) == workers, "a worker restarted during fuzzing"
    assert every_endpoint_answers_correctly(client)
