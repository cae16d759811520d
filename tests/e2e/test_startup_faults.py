"""A damaged model store stops the server at start-up with one clear line; nothing is ever served from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from service.operations.launch import launch
from tests.e2e.conftest import private_home

pytestmark = pytest.mark.e2e


def model_dir(home: Path, name: str) -> Path:
    (directory,) = [path for path in (home / "models" / name).iterdir() if path.is_dir()]
    return directory


def refusal(home: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """(exit status, the output lines saying why) of a server started on `home`."""
    server = launch(home, tmp_path / "server.log")
    try:
        status = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.stop()
        pytest.fail(f"the server kept running on a damaged store:\n{server.log_tail()}")
    lines = server.log.read_text(errors="replace").splitlines()
    return status, [line for line in lines if "refusing to start" in line]


def test_a_corrupt_model_file_stops_start_up_with_one_clear_line(model_home, tmp_path):
    home = private_home(model_home, tmp_path)
    model = model_dir(home, "digits") / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the file still parses, its hash does not match
    model.write_bytes(bytes(data))

    status, reasons = refusal(home, tmp_path)

    assert status != 0
    assert len(reasons) == 1
    assert "digits" in reasons[0] and "SHA-256" in reasons[0] and "re-import" in reasons[0]


def test_a_missing_model_stops_start_up_with_one_clear_line(model_home, tmp_path):
    home = private_home(model_home, tmp_path)
    shutil.rmtree(home / "models" / "sentiment")

    status, reasons = refusal(home, tmp_path)

    assert status != 0
    assert len(reasons) == 1
    assert "sentiment" in reasons[0] and "import-shipped" in reasons[0]


def test_unreadable_metadata_stops_start_up(model_home, tmp_path):
    home = private_home(model_home, tmp_path)
    (model_dir(home, "denoise") / "metadata.json").write_text("{not json")

    status, reasons = refusal(home, tmp_path)

    assert status != 0
    assert len(reasons) == 1 and "denoise" in reasons[0]
