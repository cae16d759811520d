"""The Grafana dashboard's queries work: a real Prometheus scrapes the running image under traffic, and every
query of deploy/compose/grafana/dashboards/modelserver.json returns data for the models it charts."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from loadtest.profiles import profiles
from service.operations.launch import ROOT, free_port
from tests.container.conftest import Container
from tests.e2e.calls import smoke_call

pytestmark = pytest.mark.container

COMPOSE = ROOT / "deploy" / "compose"
MODELS = tuple(model.name for model in profiles())
TRAFFIC_SECONDS = 12
# Only counted once something is refused (overload, draining, API key): tests/e2e/test_overload.py covers it.
NEEDS_REJECTIONS = "modelserver_rejected_requests_total"
# Every query of the dashboard must return series once the traffic below has run, but the shadow's: a shadow
# version needs the model repository (tests/e2e/test_model_repository.py checks its series on /metrics).
EXPECTED_EMPTY: set[tuple[str, str]] = {("modelserver_shadow_", model) for model in MODELS}


@pytest.fixture
def prometheus(container: Container, tmp_path: Path) -> Iterator[str]:
    """Prometheus (Debian's package) with the compose stack's scrape config, pointed at the container."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.fail("prometheus is not installed: `make test-container` installs it (install-tools.sh)")
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [container.url.removeprefix("http://")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp_path / 'data'}",
                                    f"--web.listen-address={url.removeprefix('http://')}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, "Prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def drive_traffic(url: str) -> None:
    """Good requests to every model, and requests the models reject, from 4 clients at once."""
    def client_loop():
        stop = time.monotonic() + TRAFFIC_SECONDS
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < stop:
                for model in profiles():
                    smoke_call(client, model)
                client.post("/digits/classify-image", content=b"not a png", headers={"content-type": "image/png"})
                client.post("/denoise", files={"image": ("x.png", b"not a png", "image/png")})
                client.post("/sentiment/classify", json={"text": "a wrong field name"})

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()


def query(prometheus: str, expression: str, model: str) -> list[dict]:
    expression = expression.replace("$__rate_interval", "30s").replace("${model}", model).replace("$model", model)
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", (expression, answer)
    return answer["data"]["result"]


def test_every_dashboard_query_returns_data_from_the_running_image(container, prometheus):
    drive_traffic(container.url)
    scraped = f"{prometheus}/api/v1/query?query=modelserver_requests_total"
    wait_for(lambda: len(httpx.get(scraped, timeout=5).json()["data"]["result"]) >= 3, "the traffic to be scraped")
    time.sleep(2)  # one more scrape after the last request
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "modelserver.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if NEEDS_REJECTIONS in target["expr"]:
                continue
            per_model = "$model" in target["expr"] or "${model}" in target["expr"]
            for model in MODELS if per_model else ("all",):
                if any(metric in target["expr"] and model == expected for metric, expected in EXPECTED_EMPTY):
                    continue
                if not query(prometheus, target["expr"], model):
                    empty.append(f"{panel['title']} / {target['legendFormat']} / {model}")
    print(f"\n{len(dashboard['panels'])} panels checked; empty: {empty}")
    assert not empty
