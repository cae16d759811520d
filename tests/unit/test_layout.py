"""The tree's shape holds: no import cycle anywhere, serving code never names load-test or test code, the
dependencies between serving layers point one way, and every folder of service/ says what it holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMED_MODULE = re.compile(r"[\"'](?:loadtest|tests)\.\w+")
PACKAGES = ("service", "modelcore", "training", "export", "loadtest", "tests")
# protocols -> models -> runtime -> modelcore; operations serve them all and import none of them.
LAYERS = {"service.models": {"service.protocols"}, "service.runtime": {"service.protocols", "service.models"},
          "service.operations": {"service.protocols", "service.models", "service.runtime"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module a file imports, at the top or inside a function (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere_in_the_tree():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_serving_code_never_names_load_test_or_test_code():
    for name, targets in graph().items():
        if name.startswith(("service", "modelcore")):
            assert not {target for target in targets if target.startswith(("loadtest", "tests"))}, name
    for path in [*(ROOT / "service").rglob("*.py"), *(ROOT / "modelcore").rglob("*.py")]:
        named = NAMED_MODULE.search(path.read_text())  # a "module:function" string, resolved at run time
        assert not named, f"{path.relative_to(ROOT)} names {named.group(0)}"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_serving_layers_depend_one_way(layer):
    for name, targets in graph().items():
        if name.startswith(layer + ".") or name == layer:
            upward = {target for target in targets if target.startswith(tuple(LAYERS[layer]))}
            assert not upward, f"{name} imports from a layer above it: {sorted(upward)}"


@pytest.mark.parametrize("folder", sorted(path for path in (ROOT / "service").iterdir() if path.is_dir()
                                          and (path / "__init__.py").exists()), ids=lambda path: path.name)
def test_every_folder_of_service_opens_with_a_paragraph_saying_what_it_holds(folder):
    docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
    assert docstring and len(docstring.split()) >= 15, f"service/{folder.name}/__init__.py has no docstring"
