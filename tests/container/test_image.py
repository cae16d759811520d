"""Container smoke test: the service image, run as a deployment would run it, answers and stops cleanly.

`make test-container` builds the image (deploy/container/build-image.sh) and runs this; CI runs it after
`make test`. The container gets what Kubernetes gives it in deploy/k8s: a read-only root filesystem with a
writable /tmp, no capabilities, no privilege escalation, and it is published on a loopback port only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from loadtest.stepload import free_port
from tests.e2e.calls import denoise, denoised_is_right, every_endpoint_answers_correctly

pytestmark = pytest.mark.container

IMAGE = os.environ.get("IMAGE", "localhost/modelserver:cpu")
MAX_IMAGE_MB = 600
STARTUP_SECONDS = 120
STOP_SECONDS = 10


def engine() -> str:
    """docker where a Docker engine answers, else podman (what build-image.sh chose too)."""
    chosen = os.environ.get("ENGINE")
    if chosen:
        return chosen
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    pytest.fail("no container engine: run `make test-container`, which installs podman (see DEVELOPERS.md)")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Container:
    name: str
    url: str

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


@pytest.fixture
def container(image) -> Iterator[Container]:
    name = f"modelserver-smoke-{uuid.uuid4().hex[:8]}"
    port = free_port()
    started = run("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp:rw,size=256m",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                  "--publish", f"127.0.0.1:{port}:3000", IMAGE)
    assert started.returncode == 0, started.stderr
    box = Container(name, f"http://127.0.0.1:{port}")
    try:
        box.wait_until_ready()
        yield box
    finally:
        run("rm", "--force", "--time", "0", name)


def test_image_is_small_and_holds_no_build_tools_or_torch(image):
    size_mb = image["Size"] / 1e6
    print(f"\n{IMAGE}: {size_mb:.0f} MB")
    assert size_mb <= MAX_IMAGE_MB
    probe = run("run", "--rm", "--entrypoint", "sh", IMAGE, "-c",
                "for tool in gcc cc g++ make pip pip3 apt-get; do command -v $tool; done; "
                "python3 -c 'import importlib.util as u; print([m for m in (\"torch\", \"onnx\") if u.find_spec(m)])'")
    assert probe.returncode == 0, probe.stderr
    found = probe.stdout.split()
    # apt-get comes with Debian's base system and is harmless without package lists; compilers and pip are not.
    assert not [line for line in found if any(tool in line for tool in ("gcc", "/cc", "g++", "make", "pip"))], found
    assert found[-1] == "[]", found


def test_image_runs_as_a_non_root_user_with_a_healthcheck(image):
    config = image["Config"]
    user = config["User"].split(":")[0]
    assert user.isdigit() and int(user) != 0, config["User"]
    healthcheck = image.get("Healthcheck") or config.get("Healthcheck")  # podman: top level; docker: in Config
    assert "/readyz" in " ".join(healthcheck["Test"])
    assert config["Entrypoint"][0].endswith("tini")


def test_container_serves_every_endpoint_and_is_healthy(container):
    with httpx.Client(base_url=container.url, timeout=60) as client:
        assert every_endpoint_answers_correctly(client)
        models = client.get("/models").json()["models"]
    assert {model["name"] for model in models} == {"digits", "sentiment", "denoise"}
    if engine() == "podman":
        health = run("healthcheck", "run", container.name)
        assert health.returncode == 0, health.stdout + health.stderr


def test_sigterm_finishes_the_request_in_flight_and_stops_within_seconds(container):
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=container.url, timeout=60) as client:
        slow = threading.Thread(target=lambda: answers.append(denoise(client, size=768)))
        slow.start()
        time.sleep(0.3)  # the 768x768 denoise takes over a second: it is in flight when the signal lands
        signalled = time.monotonic()
        assert run("kill", "--signal", "TERM", container.name).returncode == 0
        waited = run("wait", container.name, timeout=60)
        stopped_after = time.monotonic() - signalled
        slow.join(timeout=60)
    print(f"\nstopped {stopped_after:.1f} s after SIGTERM, exit status {waited.stdout.strip()}")
    assert waited.stdout.strip() == "0", container.logs()[-3000:]
    assert stopped_after < STOP_SECONDS
    assert answers and denoised_is_right(answers[0], size=768)
    assert "drained; stopping" in container.logs()
