"""The registry of models: every registered model has what every built-in model must have, and the tools iterate
over it. A model missing its endpoints' methods, its load profile, its training or export module, its Makefile
targets or its demo panel is named here."""

import importlib
import inspect
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from loadtest import closedloop
from loadtest.profiles import Profile, problems, profile, profiles
from service.models.contract import ServedModel
from service.models.registry import built_in, built_in_models
from service.operations.launch import ROOT

MODELS = built_in_models()
MAKE_TARGETS = ("train-{name}", "export-{name}", "{name}", "eval-{name}")


def test_names_are_unique_and_the_three_models_are_registered():
    names = [model.name for model in MODELS]
    assert len(set(names)) == len(names)
    assert {"digits", "sentiment", "denoise"} <= set(names)
    assert built_in("digits").name == "digits"
    with pytest.raises(KeyError, match="registered: digits"):
        built_in("nope")


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_declares_its_signature_and_answers_each_endpoint_with_a_coroutine(model: type[ServedModel]):
    assert issubclass(model, ServedModel) and model.inputs and model.outputs
    for endpoint in model.endpoints:
        method = getattr(model, endpoint.method, None)
        assert inspect.iscoroutinefunction(method), f"{model.name}: {endpoint.path} names no coroutine {endpoint.method}"
        assert (method.__doc__ or endpoint.summary), f"{endpoint.path}: no summary for the API page"


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_has_a_complete_load_profile(model):
    found = profile(model.name)
    assert found.name == model.name
    assert problems(found, {endpoint.path for endpoint in model.endpoints}) == []


def test_a_profile_without_a_workload_or_with_a_foreign_smoke_request_is_flagged():
    digits, sentiment = profile("digits"), profile("sentiment")
    paths = {endpoint.path for endpoint in built_in("digits").endpoints}
    assert "a load-test workload" in problems(replace(digits, workloads=()), paths)
    foreign = replace(digits, smoke=sentiment.smoke)
    assert any("one of its own endpoints" in problem for problem in problems(foreign, paths))


def test_a_model_without_a_profile_is_named():
    with pytest.raises(KeyError, match="add loadtest/profiles/identity.py"):
        profile("identity")


@pytest.mark.parametrize("found", profiles(), ids=lambda found: found.name)
def test_every_workload_payload_builds_real_bodies(found: Profile):
    for workload in found.workloads:
        bodies = workload.payload()
        assert bodies and all(isinstance(body[0], bytes) and body[0] for body in bodies), workload.name


def test_the_load_tools_know_every_registered_model_and_workload():
    for found in profiles():
        assert {workload.name for workload in found.workloads} <= set(closedloop.PAYLOADS)
    # locust patches the standard library when imported (gevent): ask it in a process of its own.
    listed = subprocess.run([sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {found.user_class for found in profiles()} | {"MixedUser"} <= set(listed.stdout.split())


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_has_its_training_and_export_modules_with_a_dry_run(model):
    training = importlib.import_module(f"training.{model.name}")
    assert callable(training.train) and callable(training.parse_args) and isinstance(training.DRY_RUN_ARGS, tuple)
    export = importlib.import_module(f"export.{model.name}")
    assert callable(export.run) and isinstance(export.DRY_RUN_OPTIONS, dict)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_has_its_makefile_targets(model):
    makefile = (ROOT / "Makefile").read_text()
    for target in MAKE_TARGETS:
        name = target.format(name=model.name)
        assert re.search(rf"^{re.escape(name)}:.*## ", makefile, re.M), f"Makefile has no documented target {name}"


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_model_has_its_demo_panel(model):
    page = (ROOT / "service" / "protocols" / "demo_page" / "index.html").read_text()
    assert f'<section id="{model.name}"' in page, f"the demo page has no panel for {model.name}"
