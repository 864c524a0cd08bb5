"""What a user's type checker sees: minipool ships ``py.typed``, so its public names must be
what they are at run time, also the ones the package imports on first use (``Pool``,
``BrokenPool``)."""

import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

USER_SCRIPT = """
    from minipool import BrokenPool, Pool


    def square(x: int) -> int:
        return x * x


    def run() -> int:
        with Pool(2) as pool:
            result: int = pool.submit(square, 3).result()
        return result


    def which_initializer(error: BrokenPool) -> str:
        return error.initializer
"""


def test_a_type_checker_sees_the_lazily_imported_pool_and_broken_pool(tmp_path, monkeypatch):
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(USER_SCRIPT))
    monkeypatch.chdir(ROOT)  # where mypy finds this checkout's minipool
    # The user's settings, not the project's: strict, and silent about minipool's own modules.
    stdout, stderr, status = api.run(
        [
            "--config-file=",
            "--strict",
            "--follow-imports=silent",
            f"--cache-dir={tmp_path / 'cache'}",
            str(script),
        ]
    )
    assert status == 0, stdout + stderr
