"""Every ```python block in README.md, docs/**/*.md and examples/README.md runs as written.

A block that cannot run alone (it needs a second machine, a server, or names defined in the
prose around it) says so on the line before it, with a reason::

    <!-- fragment: needs a coordinator at $MINIPOOL_URL -->

Fragments must still compile. Every other block runs as a script of its own: a fresh
interpreter, a fresh temporary directory as its working directory, this checkout on
``PYTHONPATH``, and a deadline. Blocks run a few at a time (the slow ones start worker
processes), each test waiting for its own. A block that imports a third-party package this
interpreter lacks (brotli, in the codecs page; the ``test`` extra installs it) is skipped
with that reason, never counted as passed.
"""

from __future__ import annotations

import ast
import concurrent.futures
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "examples" / "README.md"]
FRAGMENT = re.compile(r"<!--\s*fragment:\s*(?P<reason>\S.*?)\s*-->")
DEADLINE = 45.0  # seconds for one block (the slowest start worker processes and sleep)
PARALLEL = 3


@dataclass(frozen=True)
class Block:
    page: str  # relative to the checkout
    line: int  # of the opening fence
    source: str
    fragment: str | None  # the reason it cannot run alone, or None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(path: pathlib.Path, page: str | None = None) -> list[Block]:
    """The ```python blocks of one Markdown page, each with its fragment marker, if any.

    Raises:
        ValueError: a fragment marker (outside a code block) not directly above a ```python block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    page = page or str(path.relative_to(ROOT))
    found, opened, reason = [], None, None  # opened: index of the open fence's line
    for i, line in enumerate(lines):
        fence = line.strip().startswith("```")
        if opened is not None:
            if fence and line.strip() == "```":
                if lines[opened].strip() == "```python":
                    found.append(Block(page, opened + 1, "\n".join(lines[opened + 1 : i]) + "\n", reason))
                opened, reason = None, None
            continue
        if reason is not None and line.strip() != "```python":
            raise ValueError(f"{page}:{i}: a fragment marker must be directly above a ```python block")
        if fence:
            opened = i
        elif marker := FRAGMENT.search(line):
            reason = marker.group("reason")
    if reason is not None:
        raise ValueError(f"{page}:{len(lines)}: a fragment marker must be directly above a ```python block")
    return found


BLOCKS = [block for path in PAGES if path.exists() for block in blocks_of(path)]


def missing_packages(source: str) -> list[str]:
    """Top-level modules ``source`` imports that are neither in the standard library nor installed."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(
        n
        for n in names
        if n not in sys.stdlib_module_names and n != "minipool" and importlib.util.find_spec(n) is None
    )


def run(block: Block) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    environment.setdefault("MINIPOOL_AUTHKEY", "docs-test-key-" + "x" * 32)
    with tempfile.TemporaryDirectory(prefix="minipool-docs-") as directory:
        script = pathlib.Path(directory, "block.py")
        script.write_text(block.source, encoding="utf-8")
        try:
            return subprocess.run(
                [sys.executable, str(script)],
                cwd=directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=DEADLINE,
            )
        except subprocess.TimeoutExpired as exc:
            # The block is killed; the workers its pool started exit when their coordinator's
            # connection closes with it.
            return subprocess.CompletedProcess(
                exc.cmd, -9, exc.stdout or "", f"no exit within {DEADLINE} s\n{exc.stderr or ''}"
            )


@pytest.fixture(scope="module")
def outcomes(request):
    """Start every selected runnable block at once, a few at a time; tests wait for their own."""
    chosen = [
        item.callspec.params["block"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "block" in item.callspec.params
    ]
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        yield {
            block: pool.submit(run, block)
            for block in dict.fromkeys(chosen)
            if block.fragment is None and not missing_packages(block.source)
        }


def test_the_pages_have_python_blocks():
    assert len(BLOCKS) >= 20
    assert sum(b.fragment is None for b in BLOCKS) > sum(b.fragment is not None for b in BLOCKS)


def test_a_fragment_marker_must_sit_on_a_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```markdown\n<!-- fragment: quoted, not a marker -->\n```\n"
        "<!-- fragment: needs a server -->\n```python\nserve()\n```\n"
        "```python\nx = 1\n```\n"
    )
    assert blocks_of(page, "page.md") == [
        Block("page.md", 5, "serve()\n", "needs a server"),
        Block("page.md", 8, "x = 1\n", None),
    ]
    page.write_text("<!-- fragment: a reason -->\n\nprose\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="directly above"):
        blocks_of(page, "page.md")


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_block(block, outcomes):
    compile(block.source, str(block), "exec")  # fragments too: no typo hides behind the marker
    if block.fragment is not None:
        return
    if missing_packages(block.source):
        pytest.skip(f"{block} needs {', '.join(missing_packages(block.source))}, not installed")
    done = outcomes[block].result()
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"
