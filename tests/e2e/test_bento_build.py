"""`bentoml build` makes one Bento with the serving code and every shipped model, versioned; the Bento serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from modelcore.card import ModelMetadata
from service.operations.launch import ROOT, Server, free_port
from tests.e2e.calls import every_endpoint_answers_correctly
from tests.e2e.conftest import private_home

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bento(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    """(bento.yaml, the Bento's directory, the environment with its BENTOML_HOME) of a fresh build."""
    home = private_home(model_home, tmp_path_factory.mktemp("bento"))
    env = {**os.environ, "BENTOML_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "bentoml", "build", str(ROOT)], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    listed = subprocess.run([sys.executable, "-m", "bentoml", "list", "-o", "json"], env=env, check=True,
                            capture_output=True, text=True).stdout
    tag = json.loads(listed[listed.index("["):])[0]["tag"]
    name, version = tag.split(":")
    directory = home / "bentos" / name / version
    return yaml.safe_load((directory / "bento.yaml").read_text()), directory, env


def test_the_bento_holds_every_shipped_model_at_its_version(bento, shipped_dir):
    manifest, _, _ = bento
    tags = {model["tag"] for service in manifest["services"] for model in service["models"]}
    shipped = {f"{name}:{ModelMetadata.read(shipped_dir / name).version}" for name in ("digits", "sentiment", "denoise")}
    assert tags == shipped


def test_the_bento_holds_serving_code_only(bento):
    _, directory, _ = bento
    packages = {path.name for path in (directory / "src").iterdir() if path.is_dir()}
    assert packages == {"service", "modelcore"}
    requirements = re.findall(r"^([\w.-]+)==", (ROOT / "deploy" / "requirements-serve.txt").read_text(), re.M)
    assert "bentoml" in requirements and "onnxruntime" in requirements
    assert not {"torch", "torchvision", "onnx", "onnxscript"} & set(requirements)


def test_serving_requirements_match_the_tested_versions():
    tested = dict(re.findall(r"^([\w.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    pinned = dict(re.findall(r"^([\w.-]+)==(\S+)$", (ROOT / "deploy" / "requirements-serve.txt").read_text(), re.M))
    assert pinned and all(tested.get(name) == version for name, version in pinned.items()), pinned


def test_the_built_bento_serves_every_endpoint(bento, tmp_path):
    manifest, _, env = bento
    port = free_port()
    log = tmp_path / "bento.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", f"{manifest['name']}:{manifest['version']}"],
            env={**env, "MODEL_SERVER_HOST": "127.0.0.1", "MODEL_SERVER_PORT": str(port)},
            cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_until_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert every_endpoint_answers_correctly(client)
            assert client.get("/demo").status_code == client.get("/demo/demo.js").status_code == 200
    finally:
        server.stop()
