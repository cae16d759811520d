"""The step-load command against a running server: a short run writes every report file, with no failures."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("user", ["DigitsUser", "MixedUser"])
def test_step_load_writes_csv_html_and_plots(server_url, tmp_path, user):
    out = tmp_path / user
    command = [sys.executable, "-m", "loadtest.stepload", "--url", server_url, "--user", user,
               "--step-users", "2", "--max-users", "4", "--step-seconds", "4", "--out", str(out)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]

    for name in ("steps.csv", "throughput.png", "latency.png", "report.html", "locust_stats_history.csv", "ticks.csv"):
        assert (out / name).stat().st_size > 0, name
    steps = list(csv.DictReader((out / "steps.csv").open()))
    assert [int(row["users"]) for row in steps] == [2, 4]
    assert all(float(row["requests_per_s"]) > 0 and float(row["failures_per_s"]) == 0 for row in steps), (
        steps, (out / "locust_failures.csv").read_text()[-1000:])
    assert "load generator CPU" in finished.stdout
