"""The transports are a layer a newcomer can read module by module: no module imports another's
private names, and no two of them import each other (even lazily, inside a function)."""

from __future__ import annotations

import ast
import pathlib

import minipool

PACKAGE = pathlib.Path(minipool.__file__).parent
MODULES = sorted([*(PACKAGE / "transports").glob("*.py"), PACKAGE / "codecs.py", PACKAGE / "plugins.py"])


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from ... import`` in ``path``, anywhere in it."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
            module = ".".join(
                [*base, node.module]
                if node.level and node.module
                else base
                if node.level
                else [node.module or ""]
            )
            found.append((module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_no_private_name_is_imported_from_another_module():
    crossing = [
        f"{path.name}: from {module} import {name}"
        for path in MODULES
        for module, names in _imports(path)
        if module.startswith("minipool")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert crossing == []


def test_no_two_transport_modules_import_each_other():
    names = {_module_name(path) for path in MODULES}
    graph = {
        _module_name(path): {module for module, _ in _imports(path) if module in names} for path in MODULES
    }
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in trail:
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif len(trail) < len(graph):
                visit(nxt, [*trail, nxt])

    for start in graph:
        visit(start, [start])
    assert cycles == []


def test_no_transport_module_is_two_ideas_in_one_file():
    longest = max(MODULES, key=lambda path: len(path.read_text().splitlines()))
    assert len(longest.read_text().splitlines()) <= 450, longest.name
