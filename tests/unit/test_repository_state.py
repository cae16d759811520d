"""The repository's state on disk: traffic changes (shared by the API and the command), worker heartbeats, names."""

from __future__ import annotations

import json
import os
import time

import pytest

from service.runtime.intake import IntakeRefused, files_of_request
from service.runtime.state import (
    ALIVE_WITHIN_S,
    WORKERS,
    Canary,
    ModelState,
    changing_state,
    check_name,
    lagging_workers,
    note_applied,
    read_state,
    state_signature,
    wait_for_workers,
)


def test_adding_promoting_and_rolling_back_keep_the_previous_default():
    entry = ModelState()
    entry.add("aaaaaaaaaaaa", make_default=False)
    assert entry.default == "aaaaaaaaaaaa", "the first version is the default whatever was asked"
    entry.add("bbbbbbbbbbbb", make_default=False)
    entry.canary, entry.shadow = Canary(version="bbbbbbbbbbbb", weight=0.1), "bbbbbbbbbbbb"
    entry.promote("bbbbbbbbbbbb")
    assert (entry.default, entry.previous_default, entry.canary, entry.shadow) == \
        ("bbbbbbbbbbbb", "aaaaaaaaaaaa", None, None)
    entry.roll_back()
    assert (entry.default, entry.previous_default) == ("aaaaaaaaaaaa", None)
    assert entry.versions == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]


def test_a_state_change_is_written_whole_and_changes_the_signature(tmp_path):
    assert state_signature(tmp_path) is None and read_state(tmp_path).models == {}
    with changing_state(tmp_path) as state:
        state.models.setdefault("scaler", ModelState()).add("aaaaaaaaaaaa", True)
    first = state_signature(tmp_path)
    with changing_state(tmp_path) as state:
        state.models["scaler"].add("bbbbbbbbbbbb", False)
    assert state_signature(tmp_path) != first
    assert read_state(tmp_path).models["scaler"].versions == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert not list(tmp_path.glob(".state-*")), "no temporary file left behind"


def test_a_change_waits_for_live_workers_only(tmp_path):
    with changing_state(tmp_path):
        pass
    signature = state_signature(tmp_path)
    note_applied(tmp_path, signature)  # this process: up to date
    workers = tmp_path / WORKERS
    (workers / "host-1").write_text(json.dumps([1, 2]))  # live, behind
    (workers / "host-2").write_text(json.dumps([1, 2]))  # behind, but its heartbeat stopped: gone
    stale = time.time() - ALIVE_WITHIN_S - 1
    os.utime(workers / "host-2", (stale, stale))
    assert lagging_workers(tmp_path, signature) == ["host-1"]
    started = time.monotonic()
    assert wait_for_workers(tmp_path, signature, timeout_s=0.3) == ["host-1"]
    assert time.monotonic() - started >= 0.3
    (workers / "host-1").write_text(json.dumps(list(signature)))
    assert wait_for_workers(tmp_path, signature, timeout_s=5) == []


@pytest.mark.parametrize("name", ["", "Upper", "../up", "a/b", "-dash", "x" * 64, "dot.ted"])
def test_model_names_are_plain_path_components(name):
    with pytest.raises(ValueError):
        check_name(name)


@pytest.mark.parametrize("key", ["file:1/../../escape.onnx", "file:../model.onnx", "file:/etc/model.onnx",
                                 "file:1/a/model.onnx", "file:1/.hidden", "file:x/model.onnx", "file:1/"])
def test_request_file_names_stay_in_the_version_folder(key):
    with pytest.raises(IntakeRefused, match="file:<version number>/<file name>"):
        files_of_request({key: b"x"})


def test_one_version_folder_per_request():
    assert files_of_request({"file:1/model.onnx": b"a", "file:1/weights.bin": b"b"}) == \
        {"model.onnx": b"a", "weights.bin": b"b"}
    with pytest.raises(IntakeRefused, match="one version per load request"):
        files_of_request({"file:1/model.onnx": b"a", "file:2/model.onnx": b"b"})


def test_a_traffic_change_checks_every_version_before_changing_anything():
    entry = ModelState(versions=["aaaaaaaaaaaa", "bbbbbbbbbbbb"], default="aaaaaaaaaaaa")
    known = set(entry.versions)
    for wanted, words in [({"default": "bbbbbbbbbbbb", "shadow": "cccccccccccc"}, "not loaded"),
                          ({"canary": {"version": "bbbbbbbbbbbb", "weight": 1.5}}, "from 0 to 1"),
                          ({"canary": "bbbbbbbbbbbb"}, "or null")]:
        with pytest.raises(ValueError, match=words):
            entry.set_traffic(wanted, known)
        assert entry.default == "aaaaaaaaaaaa" and entry.canary is None and entry.shadow is None
    entry.set_traffic({"canary": {"version": "bbbbbbbbbbbb", "weight": 0.1}, "shadow": "bbbbbbbbbbbb"}, known)
    assert (entry.canary.version, entry.canary.weight, entry.shadow) == ("bbbbbbbbbbbb", 0.1, "bbbbbbbbbbbb")
    entry.set_traffic({"default": "bbbbbbbbbbbb", "canary": None}, known)
    assert (entry.default, entry.previous_default, entry.canary, entry.shadow) == \
        ("bbbbbbbbbbbb", "aaaaaaaaaaaa", None, None)
