"""Property-based fuzzing of the whole OpenAPI spec (schemathesis) against the running server.

Bounded: a fixed number of generated requests per operation, no deadline per example (the server
shares 2 cores with the fuzzer). Passes only with zero 5xx, no worker restarted, and correct answers
afterwards. (Hypothesis strategies from schemathesis' Python API: its pytest plugin does not support
pytest 9 yet.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.calls import every_endpoint_answers_correctly

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 40
INFERENCE_PATHS = {"/digits/classify", "/digits/classify-arrays", "/sentiment/classify", "/denoise"}


def fuzz(operation) -> int:
    """Run generated requests against one operation; raises on the first 5xx. Returns how many ran."""
    sent = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(checks=[not_a_server_error], timeout=30)

    run()
    return sent


def test_the_whole_spec_fuzzed_gives_no_5xx_and_no_worker_restart(server, client):
    workers = sorted(p.pid for p in server.workers())
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert INFERENCE_PATHS <= {operation.path for operation in operations}

    sent = {f"{operation.method.upper()} {operation.path}": fuzz(operation) for operation in operations}
    print("fuzzed:", sent)

    assert sorted(p.pid for p in server.workers()) == workers, "a worker restarted during fuzzing"
    assert every_endpoint_answers_correctly(client)
