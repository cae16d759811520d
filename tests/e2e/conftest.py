"""Real `bentoml serve` processes of the shipped models on free loopback ports.

One model store is imported per session and shared; the session server uses default settings, and
tests that need other settings (API key, small capacity) or that kill processes start their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from playwright.sync_api import sync_playwright

from service.operations.launch import Server, import_shipped, launch

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BENTOML_HOME with the shipped models imported (shared by every server of the session)."""
    home = tmp_path_factory.mktemp("e2e-bentoml-home")
    import_shipped(home)
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


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by playwright, for the demo and API pages."""
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: make test installs it (tests/install-tools.sh)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()
