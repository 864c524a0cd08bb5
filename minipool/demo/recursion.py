"""The tour's nested-futures step: tasks that submit tasks (SCOOP's futures on the workers).

A recursive Fibonacci whose calls above a cutoff are two child tasks, submitted from inside the
running task through :func:`minipool.current_pool`, and awaited there. More parents wait at once
than the pool has slots; they do not deadlock, because a task blocked on its children gives its
slot back (Dask's secede/rejoin). The same recursion runs serially beside it, in turns.
"""

from __future__ import annotations

from typing import Any

from .step import COLUMNS, Context, Outcome, alternate, beyond_workers, machine_load, speedup_verdict

__all__ = ["nested", "fib", "fib_tasks"]


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fib_tasks(n: int, cutoff: int) -> int:
    """``fib(n)``, its calls above ``cutoff`` as child tasks of this one."""
    if n <= cutoff:
        return fib(n)
    from ..nested import current_pool

    pool = current_pool()
    left, right = pool.submit(fib_tasks, n - 1, cutoff), pool.submit(fib_tasks, n - 2, cutoff)
    return left.result() + right.result()


def nested(ctx: Context) -> Outcome:
    pool = ctx.pool()
    n, cutoff = ctx.size(31, 33), ctx.size(24, 26)
    seconds, values = alternate(
        {
            "serial recursion": lambda: fib(n),
            "child tasks on the pool": lambda: pool.submit(fib_tasks, n, cutoff).result(),
        },
        rounds=3,
    )
    peak = pool.status().get("waiting_peak", 0)
    tasks = 2 * _calls_above(n, cutoff) + 1
    speedup = seconds["serial recursion"] / seconds["child tasks on the pool"]
    right = values["serial recursion"] == values["child tasks on the pool"]
    busy, load = machine_load()
    rows: list[list[Any]] = [
        ["serial recursion", 1, 1, seconds["serial recursion"], "", 1.0],
        ["child tasks on the pool", ctx.workers, tasks, seconds["child tasks on the pool"], peak, speedup],
    ]
    return Outcome(
        COLUMNS + ["parents waiting at once (peak)", "speed-up"],
        rows,
        f"fib({n}) as {tasks} nested tasks: {speedup:.2f}x over serial, up to {peak} parents waiting "
        f"on {ctx.workers} slots" + ("" if right else ", A RESULT WAS WRONG"),
        speedup_verdict(
            speedup,
            f"Every call above fib({cutoff}) is two tasks submitted from inside a task; {peak} parents "
            f"waited at once on {ctx.workers} slots without a deadlock, because a waiting task gives "
            f"its slot back, and the leaves kept {ctx.workers} workers busy: {speedup:.2f}x."
            + beyond_workers(speedup, ctx.workers),
            f"No deadlock ({peak} parents waited at once on {ctx.workers} slots), but only "
            f"{speedup:.2f}x: "
            + (
                f"the cores are busy with other work ({load})."
                if busy
                else f"each leaf, fib({cutoff}), is too little work beside a task's round trip and "
                "its parent's wait; a higher cutoff gives the workers more to do per task."
            ),
        )
        + " (A ProcessPoolExecutor running the same program deadlocks once two parents hold its two "
        "workers: python -m minipool.bench dispatch shows it.)",
        {
            "serial recursion": seconds["serial recursion"],
            "child tasks on the pool": seconds["child tasks on the pool"],
        },
        "seconds",
        [f"fib({n}) = {values['child tasks on the pool']}, equal to the serial recursion's: {_yes(right)}"],
        peer="serial recursion",
    )


def _calls_above(n: int, cutoff: int) -> int:
    """How many calls of the recursion are parents (above the cutoff)."""
    return 0 if n <= cutoff else 1 + _calls_above(n - 1, cutoff) + _calls_above(n - 2, cutoff)


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"
