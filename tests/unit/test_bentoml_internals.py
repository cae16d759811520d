"""service.operations.bentoml_internals: the one place BentoML's internals are touched, checked against the
installed BentoML, and a loud refusal when an upgrade moved what a patch replaces."""

import pytest

from service.operations import bentoml_internals
from service.operations.bentoml_internals import PATCHES, BentoMLInternalsChanged, Patch, apply, missing


def test_the_installed_bentoml_has_everything_the_patches_replace():
    assert missing() == []
    for patch in PATCHES:
        assert patch.why and patch.upstream.startswith("bentoml/BentoML#"), patch


def test_a_moved_target_stops_the_server_naming_it_and_what_to_do(monkeypatch):
    moved = Patch("_bentoml_impl.server.app", "ServiceAppFactory.build_app_renamed", "Put our front door in front.",
                  "bentoml/BentoML#0")
    monkeypatch.setattr(bentoml_internals, "PATCHES", (*PATCHES, moved))
    with pytest.raises(BentoMLInternalsChanged) as refused:
        apply(lambda app: app)
    message = str(refused.value)
    assert "ServiceAppFactory.build_app_renamed" in message and bentoml_internals.TESTED_WITH in message
    assert "Pin the tested version" in message


def test_applying_twice_wraps_the_app_once():
    from _bentoml_impl.server.app import ServiceAppFactory

    apply(lambda app: ("front door", app))
    first = ServiceAppFactory.__call__
    apply(lambda app: ("front door", app))
    assert ServiceAppFactory.__call__ is first and first.wrapped_by_modelserver
