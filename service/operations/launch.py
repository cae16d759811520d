"""Run the model server as a child process on a free loopback port: what the tests, the load-test kit and
the benchmark share to start one, wait until it is ready, watch its memory and stop it.

    with served_locally(Path("server.log"), max_batch_size="1") as server:
        httpx.get(f"{server.url}/models")

Settings are MODEL_SERVER_* values by lower-case name. Imports nothing of BentoML: the server is a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120
STOP_SECONDS = 30  # BentoML's supervisor gives a stopping worker 30 s


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerExited(RuntimeError):
    """The server process exited, or was not ready in time; the message carries its log's tail."""


@dataclass
class Server:
    """One `bentoml serve` process group and where it listens."""

    process: subprocess.Popen
    url: str
    log: Path
    grpc_target: str = ""  # host:port of the Open Inference Protocol over gRPC

    def wait_until_ready(self, seconds: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerExited(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise ServerExited(f"server not ready after {seconds} s:\n{self.log_tail()}")

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
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the process group (the server drains); SIGKILL it if it has not exited in STOP_SECONDS."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch(home: Path, log: Path, target: str = "service.app:ModelServer", **settings: str) -> Server:
    """Start `bentoml serve` on a free loopback port with BENTOML_HOME=home; does not wait for readiness."""
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
           "MODEL_SERVER_HOST": "127.0.0.1", "MODEL_SERVER_PORT": str(port), "MODEL_SERVER_GRPC_PORT": str(grpc_port)}
    env.update({f"MODEL_SERVER_{name.upper()}": value for name, value in settings.items()})
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", target], env=env, cwd=ROOT,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(process, f"http://127.0.0.1:{port}", log, grpc_target=f"127.0.0.1:{grpc_port}")


def import_shipped(home: Path) -> None:
    """Import the shipped artifacts/ models into the model store at `home`."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    subprocess.run([sys.executable, "-m", "service.store", "import-shipped"], env=env, cwd=ROOT, check=True)


@contextlib.contextmanager
def served_locally(log: Path, home: Path | None = None, **settings: str) -> Iterator[Server]:
    """The shipped models served on a free loopback port until the block ends (then SIGTERM, drained)."""
    home = home or Path(os.environ.get("BENTOML_HOME", ROOT / ".bentoml"))
    import_shipped(home)
    server = launch(home, log, **settings)
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()
