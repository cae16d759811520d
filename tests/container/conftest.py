"""The service image run as a deployment would run it: `make test-container` builds it and runs these tests.

The container gets what Kubernetes gives it in deploy/k8s: a read-only root filesystem with a writable
/tmp, no capabilities, no privilege escalation, and it is published on a loopback port only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.operations.launch import free_port

IMAGE = os.environ.get("IMAGE", "localhost/modelserver:cpu")
ENGINE_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "container" / "engine.sh"
STARTUP_SECONDS = 120


@functools.cache
def engine() -> str:
    """The engine build-image.sh used: $ENGINE, else docker where a Docker engine answers, else podman."""
    chosen = subprocess.run([str(ENGINE_SCRIPT)], capture_output=True, text=True, check=True).stdout.strip()
    if not shutil.which(chosen):
        pytest.fail(f"no container engine ({chosen}): run `make test-container`, which installs podman (DEVELOPERS.md)")
    return chosen


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Container:
    name: str
    url: str
    grpc_target: str

    def logs(self) -> str:
        result = run("logs", self.name)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(run("inspect", self.name).stdout)[0]["State"]

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                pytest.fail(f"container exited during start-up:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"not ready within {STARTUP_SECONDS} s:\n{self.logs()[-3000:]}")


@pytest.fixture(scope="module")
def image() -> dict:
    inspected = run("image", "inspect", IMAGE)
    if inspected.returncode != 0:
        pytest.fail(f"image {IMAGE} not found: build it with `make image` (make test-container does)")
    return json.loads(inspected.stdout)[0]


@contextlib.contextmanager
def running(**settings: str) -> Iterator[Container]:
    """The image locked down as in deploy/k8s, with MODEL_SERVER_* settings (keyword names, lower case)."""
    name = f"modelserver-smoke-{uuid.uuid4().hex[:8]}"
    port, grpc_port = free_port(), free_port()
    env = [f"--env=MODEL_SERVER_{key.upper()}={value}" for key, value in settings.items()]
    started = run("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp:rw,size=256m",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *env,
                  "--publish", f"127.0.0.1:{port}:3000", "--publish", f"127.0.0.1:{grpc_port}:3001", IMAGE)
    assert started.returncode == 0, started.stderr
    box = Container(name, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")
    try:
        box.wait_until_ready()
        yield box
    finally:
        run("kill", name)  # SIGKILL: cleanup need not wait for a drain (docker rm has no --time)
        run("rm", "--force", name)


@pytest.fixture
def container(image) -> Iterator[Container]:
    with running() as box:
        yield box


@pytest.fixture
def diagnostics_container(image) -> Iterator[Container]:
    """The image with the diagnostics endpoints on (/diagnostics/hold: a request in flight for a set time)."""
    with running(diagnostics="true") as box:
        yield box
