"""The other Python interpreters of this machine, for the cross-version tests.

Found as .ci/run finds them: ``pyenv prefix 3.13`` when pyenv is installed, else ``python3.13``
on the PATH. A version that cannot be found is skipped with the reason, never failed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The versions minipool supports (pyproject.toml's classifiers), the running one included.
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
#: Each supported version other than the one running the tests.
OTHERS = tuple(v for v in SUPPORTED if v != f"{sys.version_info[0]}.{sys.version_info[1]}")
ROOT = Path(__file__).resolve().parent.parent


def _pyenv() -> str | None:
    """pyenv's command, also when it is installed but not on the PATH (as in .ci/run)."""
    default = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "bin" / "pyenv"
    return shutil.which("pyenv") or (str(default) if default.exists() else None)


def find(version: str) -> str | None:
    """The path of a ``python`` of ``version`` ("3.13"), or None."""
    pyenv = _pyenv()
    if pyenv:
        try:
            prefix = subprocess.run(
                [pyenv, "prefix", version], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            prefix = ""
        candidate = Path(prefix.splitlines()[0]) / "bin" / "python" if prefix else None
        if candidate is not None and candidate.exists():
            return str(candidate)
    return shutil.which(f"python{version}")


def require(version: str) -> str:
    """The interpreter of ``version``, or skip the calling test saying which is missing."""
    path = find(version)
    if path is None:
        pytest.skip(
            f"no Python {version} here (neither `pyenv prefix {version}` nor python{version} on PATH)"
        )
    return path


def env(**extra: str) -> dict[str, str]:
    """An environment in which any interpreter imports this checkout's minipool and the tests'
    modules, and nothing from the running interpreter's site-packages."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests"))),
        "PYTHONNOUSERSITE": "1",
        **extra,
    }
