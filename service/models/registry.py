"""One registry of built-in models: everything that serves, documents or tests models iterates over it.

Adding a model to the server is its module in this package (a ServedModel subclass) and one line in BUILT_IN
below. Shipping it as a built-in model also takes its training/ and export/ modules, its load profile in
loadtest/profiles.py, its Makefile targets and its demo panel: tests/unit/test_registry.py fails when a
registered model lacks any of them. README's "Adding a model" section says what each file holds.
"""

from __future__ import annotations

import functools
import importlib

from service.models.contract import ServedModel

BUILT_IN = (
    "service.models.digits:Digits",
    "service.models.sentiment:Sentiment",
    "service.models.denoise:Denoise",
)


@functools.cache
def built_in_models() -> tuple[type[ServedModel], ...]:
    """The built-in model classes, in serving order."""
    return tuple(getattr(importlib.import_module(module), name)
                 for module, name in (line.split(":") for line in BUILT_IN))


def built_in(name: str) -> type[ServedModel]:
    """The built-in model class called `name`; KeyError naming the registered ones."""
    for model in built_in_models():
        if model.name == name:
            return model
    raise KeyError(f"no built-in model named {name!r}; registered: {', '.join(m.name for m in built_in_models())}")
