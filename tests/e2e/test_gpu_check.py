"""`make gpu-check` in its dry form: every step of the GPU check (providers from onnxruntime's profile, parity, the
in-process throughput table, this server's benchmark rows through a running server, HTTP and gRPC) run on the CPU
provider, so the script a GPU session runs has already run here. On a machine without a GPU the real check says so in
one line and exits 0."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from service.operations.launch import ROOT

pytestmark = pytest.mark.e2e

HEAVY_WORKLOADS = ("sentiment, 32 texts", "denoise, ")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is here: the real check is `make gpu-check`")
def test_without_a_gpu_the_check_says_so_in_one_line_and_exits_0():
    finished = subprocess.run([sys.executable, "-m", "loadtest.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip().splitlines() == [
        "gpu-check: no NVIDIA GPU on this machine (nvidia-smi lists none); nothing to check"]


def test_the_dry_run_writes_the_report_with_every_model_and_row(tmp_path):
    finished = subprocess.run([sys.executable, "-m", "loadtest.gpu_check", "--dry-run", "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [model["model"] for model in report["models"]] == ["digits", "sentiment", "denoise"]
    for model in report["models"]:
        assert model["nodes_by_provider"].get("CPUExecutionProvider", 0) > 0  # the profile names where nodes ran
        assert model["parity"]["max_abs_diff"] == 0.0 and model["parity"]["labels_differing"] == 0
        assert all(row["cpu_items_per_s"] > 0 and row["gpu_items_per_s"] > 0 for row in model["throughput"])
    assert report["models"][0]["parity"]["labels_compared"] > 0
    rows = report["servers"]["cpu"]
    assert any("gRPC ModelInfer" in row for row in rows) and all(rate >= 0 for rate in rows.values()), rows
    # a dry run measures each row for one second: on a loaded 2-core box the first 32-text batch or 256x256 denoise
    # may not finish inside it, so only the light rows must have answered
    light = {row: rate for row, rate in rows.items() if not row.startswith(HEAVY_WORKLOADS)}
    assert len(light) >= 6 and all(rate > 0 for rate in light.values()), rows
    assert "| digits |" in (tmp_path / "gpu-check.md").read_text()
