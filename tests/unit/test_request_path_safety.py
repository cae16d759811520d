"""The serving code never deserialises with code execution and never builds paths from request data.

Checked on the source of everything the server imports (service/, modelcore/): no pickle-family
modules, no eval/exec, no numpy loading with pickles, no YAML loaders that build objects.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVING_SOURCES = sorted([*ROOT.glob("service/**/*.py"), *ROOT.glob("modelcore/*.py")])
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle", "torch"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def called_builtins(tree: ast.AST) -> set[str]:
    """Names called bare (eval(...)), not as attributes (re.compile(...) is fine)."""
    return {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


@pytest.mark.parametrize("source", SERVING_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_code_executing_deserialisation(source):
    tree = ast.parse(source.read_text())
    assert not imported_modules(tree) & UNSAFE_MODULES
    assert not called_builtins(tree) & UNSAFE_CALLS
    text = source.read_text()
    assert "allow_pickle=True" not in text and "yaml.load(" not in text and "unsafe_load" not in text


def test_the_check_covers_the_serving_code():
    names = {str(path.relative_to(ROOT)) for path in SERVING_SOURCES}
    assert {"service/app.py", "service/operations/frontdoor.py", "service/protocols/rest.py",
            "service/runtime/session.py", "modelcore/images.py"} <= names
