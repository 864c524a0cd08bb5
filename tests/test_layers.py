"""The package's layers, read from the source: no import cycle, no private name across modules.

Every module under minipool/ is parsed with ``ast`` (nothing is imported), and every import of
one of minipool's own modules becomes an edge: top-level imports, imports inside functions
(a lazy import that dodges a cycle is still a cycle) and imports under ``TYPE_CHECKING`` (a
type-only cycle still ties two modules together). ``from pkg import name`` points at the
submodule ``pkg.name`` when there is one, else at ``pkg``. Importing a package's submodule
is not counted as importing the package's ``__init__``.

A package listed in ``CLEAN`` must have no cycle among its modules, and none of its modules
may import a ``_private`` name from another minipool module or reach one through a module it
imported (``task._cache``). Add a package to ``CLEAN`` once it is clean.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "minipool"

#: Packages that must stay free of import cycles and of private names crossing modules
#: ("minipool": the whole package, the others named for whoever reads a failure).
CLEAN = ["minipool.pipeline", "minipool.journal", "minipool.cluster", "minipool"]

#: What a package may import from minipool, for packages that must stay below others.
ALLOWED_BELOW = {
    "minipool.journal": ("minipool.errors", "minipool.journal"),
    # The coordinator's data and rules: no transport, no session, nothing that does I/O. They
    # decide; minipool.cluster.broker encodes and sends.
    "minipool.cluster.balance": (),
    "minipool.cluster.registry": (),
    "minipool.cluster.state": ("minipool.errors", "minipool.wire", "minipool.cluster.balance"),
    "minipool.cluster.effects": ("minipool.cluster.state",),
    "minipool.cluster.queueing": (
        "minipool.cluster.balance",
        "minipool.cluster.state",
        "minipool.cluster.effects",
    ),
    "minipool.cluster.scheduler": (
        "minipool.errors",
        "minipool.wire",
        "minipool.cluster.balance",
        "minipool.cluster.state",
        "minipool.cluster.effects",
        "minipool.cluster.queueing",
    ),
    # The sessions: below the coordinator, the worker and the client that use them.
    "minipool.cluster.outbox": ("minipool.errors", "minipool.transports"),
    "minipool.cluster.session": (
        "minipool.errors",
        "minipool.transports",
        "minipool.wire",
        "minipool.cluster.outbox",
    ),
}


def _module_names() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_names()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``from ... import`` reads from, inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class Imports:
    """Edges from each module to the minipool modules it imports, and private names it uses."""

    def __init__(self) -> None:
        self.edges: dict[str, set[str]] = defaultdict(set)
        self.private: list[str] = []  # "module:line: what"
        for module, path in MODULES.items():
            self._read(module, ast.parse(path.read_text(), str(path)))

    def _read(self, module: str, tree: ast.Module) -> None:
        aliases: dict[str, str] = {}  # a local name bound to a minipool module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        self.edges[module].add(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                if source not in MODULES:
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if target in MODULES:
                        self.edges[module].add(target)
                        aliases[alias.asname or alias.name] = target
                        continue
                    self.edges[module].add(source)
                    if _private(alias.name) and source != module:
                        self.private.append(f"{module}:{node.lineno}: imports {alias.name} from {source}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                self.private.append(f"{module}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")

    def cycles(self, package: str) -> list[list[str]]:
        """Strongly connected groups of more than one module (or a module importing itself)."""
        inside = {m for m in MODULES if m == package or m.startswith(package + ".")}
        graph = {m: sorted(self.edges[m] & inside) for m in sorted(inside)}
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []

        def visit(node: str) -> None:  # Tarjan's algorithm
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            for nxt in graph[node]:
                if nxt not in index:
                    visit(nxt)
                    low[node] = min(low[node], low[nxt])
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    found.append(sorted(group))

        for node in graph:
            if node not in index:
                visit(node)
        return found


@pytest.fixture(scope="module")
def imports() -> Imports:
    return Imports()


def test_the_reader_finds_the_imports_it_must(imports):
    # A reader that missed imports would pass everything below: it must see relative,
    # absolute and package-level imports.
    assert "minipool.pipeline.execution" in imports.edges["minipool.pipeline.core"]
    assert "minipool.journal" in imports.edges["minipool.pipeline.channels"]
    assert "minipool.shipping" in imports.edges["minipool.pipeline.runners"]
    assert {"minipool.pipeline.core", "minipool.pipeline.operators"} <= imports.edges["minipool.pipeline"]


def test_the_reader_sees_a_cycle_and_a_private_name():
    reader = Imports.__new__(Imports)
    reader.edges, reader.private = defaultdict(set), []
    reader._read("minipool.pipeline.core", ast.parse("def start():\n    from .execution import Execution\n"))
    reader._read(
        "minipool.pipeline.execution",
        ast.parse("from .core import Stage, _Hidden\nfrom .. import task\ntask._cache.clear()\n"),
    )
    assert reader.cycles("minipool.pipeline") == [["minipool.pipeline.core", "minipool.pipeline.execution"]]
    assert len(reader.private) == 2


@pytest.mark.parametrize("package", CLEAN)
def test_no_import_cycle_inside(imports, package):
    assert imports.cycles(package) == []


@pytest.mark.parametrize("package", CLEAN)
def test_no_private_name_crosses_modules(imports, package):
    assert [p for p in imports.private if p.split(":")[0].startswith(package)] == []


@pytest.mark.parametrize("package", sorted(ALLOWED_BELOW))
def test_a_lower_package_imports_nothing_above_it(imports, package):
    allowed = ALLOWED_BELOW[package]
    outside = {
        f"{m} -> {t}"
        for m in MODULES
        if m == package or m.startswith(package + ".")
        for t in imports.edges[m]
        if not any(t == a or t.startswith(a + ".") for a in allowed)
    }
    assert outside == set()


def test_no_module_is_over_450_lines():
    # One idea per module: a file that outgrows this is two ideas (docs/architecture.md).
    sizes = {
        str(p.relative_to(PACKAGE_ROOT)): len(p.read_text().splitlines()) for p in PACKAGE_ROOT.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 450} == {}
