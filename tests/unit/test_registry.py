"""The registry of models: every registered model has what every model must have, and everything iterates over it."""

import subprocess
import sys
from dataclasses import replace

import pytest

from loadtest import closedloop
from loadtest.payloads import resolve
from service.launch import ROOT
from service.registry import LoadProfile, Smoke, models, problems

MODELS = models()


def test_names_are_unique_and_the_three_models_are_registered():
    names = [model.name for model in MODELS]
    assert len(set(names)) == len(names)
    assert {"digits", "sentiment", "denoise"} <= set(names)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_registered_model_is_complete(model):
    assert problems(model) == []


def test_a_model_without_a_workload_or_a_smoke_check_is_flagged():
    digits = MODELS[0]
    no_load = replace(digits, load=LoadProfile(workloads=(), mixed_weight=1, compute_feeds="x:y"))
    assert "a load-test workload" in problems(no_load)
    no_smoke = replace(digits, smoke=Smoke(request=digits.smoke.request, check=None))
    assert "a smoke request and the check of its answer" in problems(no_smoke)
    elsewhere = replace(digits, smoke=Smoke(request=MODELS[1].smoke.request, check=digits.smoke.check))
    assert any("one of its own endpoints" in problem for problem in problems(elsewhere))


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_workload_payload_resolves_to_real_bodies(model):
    for workload in model.load.workloads:
        bodies = resolve(workload.payload)()
        assert bodies and all(isinstance(body[0], bytes) and body[0] for body in bodies), workload.name


def test_the_load_tools_know_every_registered_model_and_workload():
    for model in MODELS:
        assert {workload.name for workload in model.load.workloads} <= set(closedloop.PAYLOADS)
    # locust patches the standard library when imported (gevent): ask it in a process of its own.
    listed = subprocess.run([sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {model.user_class for model in MODELS} | {"MixedUser"} <= set(listed.stdout.split())


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_has_its_training_and_export_modules(model):
    import importlib

    training = importlib.import_module(f"training.{model.name}")
    assert callable(training.train) and callable(training.parse_args)
    assert callable(importlib.import_module(f"export.{model.name}").run)
