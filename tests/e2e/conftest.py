"""Real `bentoml serve` processes of the shipped models on free loopback ports.

One model store is imported per session and shared; the session server uses default settings, and
tests that need other settings (API key, small capacity) or that kill processes start their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from loadtest.stepload import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120


@dataclass
class Server:
    """One `bentoml serve` process group and where it listens."""

    process: subprocess.Popen
    url: str
    log: Path

    def wait_until_ready(self, seconds: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {seconds} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def processes(self) -> list[psutil.Process]:
        """The serving process and all its descendants (the workers)."""
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """Worker processes: the descendants that run the service."""
        return [p for p in psutil.Process(self.process.pid).children(recursive=True) if "python" in p.name().lower()]

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited within 30 s."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch(home: Path, log: Path, **settings: str) -> Server:
    """Start `bentoml serve` on a free port with MODEL_SERVER_* settings (keyword names, lower case)."""
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "MODEL_SERVER_HOST": "127.0.0.1", "MODEL_SERVER_PORT": str(port)}
    env.update({f"MODEL_SERVER_{name.upper()}": value for name, value in settings.items()})
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "service.app:ModelServer"],
            env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Server(process, f"http://127.0.0.1:{port}", log)


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BENTOML_HOME with the shipped models imported (shared by every server of the session)."""
    home = tmp_path_factory.mktemp("e2e-bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "service.store", "import-shipped"], env=env, cwd=ROOT, check=True)
    return home


def private_home(model_home: Path, directory: Path) -> Path:
    """A BENTOML_HOME of its own holding a copy of the imported models.

    Every server needs one: BentoML keeps its Prometheus files under BENTOML_HOME and clears them when a
    server starts, so two servers sharing a home would wipe each other's metrics.
    """
    home = directory / "bentoml-home"
    shutil.copytree(model_home / "models", home / "models")
    return home


@pytest.fixture(scope="session")
def start_server(model_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """Factory: start_server(**settings) -> a ready Server on its own BENTOML_HOME, stopped at the end."""
    started: list[Server] = []

    def start(home: Path | None = None, wait: bool = True, **settings: str) -> Server:
        directory = tmp_path_factory.mktemp("server")
        log = directory / "server.log"
        server = launch(home or private_home(model_home, directory), log, **settings)
        started.append(server)
        if wait:
            server.wait_until_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The shared server with default settings."""
    return start_server()


@pytest.fixture(scope="session")
def server_url(server: Server) -> str:
    return server.url


@pytest.fixture(scope="session")
def client(server_url: str):
    with httpx.Client(base_url=server_url, timeout=60) as session:
        yield session
