"""Every place this server reaches into BentoML's internals: this module, applied from one call (`apply`).

Each patch names what it replaces, why, and the upstream thread. `missing()` lists the patched attributes the
installed BentoML no longer has; `apply` refuses to start with that list (and tests/unit/test_bentoml_internals.py
fails) instead of serving with a patch that silently stopped applying after an upgrade.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

TESTED_WITH = "bentoml 1.4.40"


@dataclass(frozen=True)
class Patch:
    module: str
    attribute: str  # dotted within the module, e.g. "ServiceAppFactory.__call__"
    why: str
    upstream: str

    def target(self) -> Any:
        found: Any = importlib.import_module(self.module)
        for part in self.attribute.split("."):
            found = getattr(found, part)
        return found


FRONT_DOOR = Patch(
    module="_bentoml_impl.server.app",
    attribute="ServiceAppFactory.__call__",
    why="Put our front door (service/operations/frontdoor.py) in front of the ASGI app BentoML builds for each "
        "worker. Middleware added with Service.add_asgi_middleware always runs inside BentoML's own stack (traffic "
        "metrics, an OpenTelemetry span, the access log, a timeout task, a context middleware), which on a "
        "one-image request costs more CPU than the model; our routes need none of it, and admission control and "
        "authentication must answer before any of it runs.",
    upstream="bentoml/BentoML#4761 fixed that order: user middleware comes after the built-in ones, with no public "
             "way to run first",
)
PATCHES = (FRONT_DOOR,)


class BentoMLInternalsChanged(RuntimeError):
    """The installed BentoML lacks something a patch replaces."""


def missing() -> list[str]:
    """The patches whose target the installed BentoML no longer has, each with why it mattered."""
    absent = []
    for patch in PATCHES:
        try:
            patch.target()
        except (ImportError, AttributeError):
            absent.append(f"{patch.module}.{patch.attribute} ({patch.why.split('.')[0]}; {patch.upstream})")
    return absent


def apply(front_door: Callable[[Any], Any]) -> None:
    """Wrap every main-service app BentoML builds with `front_door(app)`; refuses when a target has moved."""
    absent = missing()
    if absent:
        raise BentoMLInternalsChanged(
            f"modelserver was tested with {TESTED_WITH}; the installed BentoML no longer has: {'; '.join(absent)}. "
            "Pin the tested version (constraints.txt) or port service/operations/bentoml_internals.py."
        )
    from _bentoml_impl.server.app import ServiceAppFactory

    build = ServiceAppFactory.__call__
    if getattr(build, "wrapped_by_modelserver", False):
        return

    @functools.wraps(build)
    def build_behind_front_door(self: Any) -> Any:
        app = build(self)
        return front_door(app) if self.is_main else app

    build_behind_front_door.wrapped_by_modelserver = True  # type: ignore[attr-defined]
    ServiceAppFactory.__call__ = build_behind_front_door  # type: ignore[method-assign]
