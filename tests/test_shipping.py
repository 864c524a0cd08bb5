"""Functions travel by value when a worker could not import them."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from minipool.shipping import dumps, loads, ships_by_value

SCALE = 3


def module_level(x):
    return x * SCALE


def test_importable_functions_travel_by_reference():
    assert not ships_by_value(module_level.__wrapped__ if hasattr(module_level, "__wrapped__") else math.sqrt)
    assert loads(dumps(math.sqrt)) is math.sqrt


def test_lambdas_closures_and_recursion_travel_by_value():
    offset = 10

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    fns = loads(dumps([lambda x: x + offset, fact, lambda v: math.floor(v)]))
    assert fns[0](1) == 11
    assert fns[1](5) == 120
    assert fns[2](2.5) == 2


def test_a_main_module_function_runs_in_a_fresh_interpreter():
    script = textwrap.dedent("""
        import sys, math
        from minipool.shipping import dumps
        K = 7
        def helper(x): return x * K
        def work(x): return helper(x) + math.isqrt(16)
        sys.stdout.buffer.write(dumps([work, lambda y: work(y) * 2]))
    """)
    blob = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    check = (
        "import sys; from minipool.shipping import loads;"
        " f, g = loads(sys.stdin.buffer.read()); print(f(1), g(1))"
    )
    out = subprocess.run([sys.executable, "-c", check], input=blob, capture_output=True, check=True)
    assert out.stdout.split() == [b"11", b"22"]


def test_a_script_function_passed_as_an_argument_reaches_the_worker(tmp_path):
    # The C pickler pickles a __main__ function by reference without complaint; a worker's
    # __main__ is another program, so it must travel by value, as the task's own function does
    # (Dask sends it the same way). Before: AttributeError: Can't get attribute 'double'.
    script = tmp_path / "coursework.py"
    script.write_text(
        textwrap.dedent(
            """
            from minipool import Pool

            def double(x):
                return 2 * x

            def apply(f, x):
                return f(x)

            if __name__ == "__main__":
                with Pool(2) as pool:
                    print(pool.submit(apply, double, 21).result())
                    print(list(pool.map(apply, [double, double], [1, 2])))
                    print(pool.map_reduce(lambda f: f(5), lambda a, b: a + b, [double, double]))
            """
        )
    )
    root = str(Path(__file__).resolve().parent.parent)  # minipool itself, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["42", "[2,", "4]", "20"]
