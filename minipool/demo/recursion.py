"""The tour's nested-futures step: tasks that submit tasks (SCOOP's futures on the workers).

A recursive Fibonacci whose calls above a cutoff are two child tasks, submitted from inside the
running task through :func:`minipool.current_pool`, and awaited there; run two ways beside the
serial recursion, in turns. By default the children stay in their parent's worker, which runs
them as calls when it waits on them, and an idle worker steals the oldest (work stealing, as
fork/join runtimes do). With ``keep_children=False`` every child goes through the coordinator,
as in SCOOP: more parents wait at once than the pool has slots, and they do not deadlock,
because a task blocked on its children gives its slot back (Dask's secede/rejoin).
"""

from __future__ import annotations

from typing import Any

from .step import COLUMNS, Context, Outcome, alternate, beyond_workers, machine_load, speedup_verdict

__all__ = ["nested", "fib", "fib_tasks"]

KEPT = "child tasks, kept + stolen"
ROUTED = "child tasks on the pool"  # every child through the coordinator
SERIAL = "serial recursion"


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fib_tasks(n: int, cutoff: int, keep: bool = True) -> int:
    """``fib(n)``, its calls above ``cutoff`` as child tasks of this one (``keep``: kept in its
    worker unless stolen; else through the coordinator)."""
    if n <= cutoff:
        return fib(n)
    from ..nested import current_pool

    pool = current_pool(keep_children=keep)
    left, right = pool.submit(fib_tasks, n - 1, cutoff, keep), pool.submit(fib_tasks, n - 2, cutoff, keep)
    return left.result() + right.result()


def nested(ctx: Context) -> Outcome:
    pool = ctx.pool()
    n, cutoff = ctx.size(31, 33), ctx.size(24, 26)
    sent: dict[str, int] = {KEPT: 0, ROUTED: 0}  # children that went through the coordinator

    def run(name: str, keep: bool) -> int:
        before = pool.status()["submitted"]
        value = pool.submit(fib_tasks, n, cutoff, keep).result()
        sent[name] += pool.status()["submitted"] - before - 1
        return value

    steals = pool.status().get("steals", 0)
    seconds, values = alternate(
        {SERIAL: lambda: fib(n), KEPT: lambda: run(KEPT, True), ROUTED: lambda: run(ROUTED, False)},
        rounds=3,
    )
    status = pool.status()
    peak, steals = status.get("waiting_peak", 0), status.get("steals", 0) - steals
    tasks = 2 * _calls_above(n, cutoff) + 1
    kept = tasks - 1 - sent[KEPT] // 3  # children run by their parent, per run
    speedup = seconds[SERIAL] / seconds[KEPT]
    routed = seconds[SERIAL] / seconds[ROUTED]
    right = values[SERIAL] == values[KEPT] == values[ROUTED]
    busy, load = machine_load()
    rows: list[list[Any]] = [
        [SERIAL, 1, 1, seconds[SERIAL], "", "", 1.0],
        [KEPT, ctx.workers, tasks, seconds[KEPT], "", kept, speedup],
        [ROUTED, ctx.workers, tasks, seconds[ROUTED], peak, 0, routed],
    ]
    return Outcome(
        COLUMNS + ["parents waiting at once (peak)", "children run by their parent", "speed-up"],
        rows,
        f"fib({n}) as {tasks} nested tasks: {speedup:.2f}x over serial with children kept and stolen, "
        f"{routed:.2f}x with every child through the coordinator" + ("" if right else ", A RESULT WAS WRONG"),
        speedup_verdict(
            speedup,
            f"Every call above fib({cutoff}) is two tasks submitted from inside a task. Kept in "
            f"their parent's worker, {kept} of the {tasks - 1} children ran there as calls, and "
            f"an idle worker asked {steals} times for the oldest (the biggest subtree left), which "
            f"kept {ctx.workers} workers busy: {speedup:.2f}x." + beyond_workers(speedup, ctx.workers),
            f"Children kept and stolen gave only {speedup:.2f}x: "
            + (
                f"the cores are busy with other work ({load})."
                if busy
                else "the recursion is too little work for the steals to spread it; a larger n "
                "gives the idle worker more to take."
            ),
        )
        + f" Sent through the coordinator instead, {peak} parents waited at once on {ctx.workers} "
        f"slots without a deadlock, because a waiting task gives its slot back: {routed:.2f}x. (A "
        "ProcessPoolExecutor running the same program deadlocks once two parents hold its two "
        "workers: python -m minipool.bench dispatch shows it.)",
        {name: seconds[name] for name in (SERIAL, KEPT, ROUTED)},
        "seconds",
        [f"fib({n}) = {values[KEPT]}, both ways equal to the serial recursion's: {_yes(right)}"],
        peer=SERIAL,
    )


def _calls_above(n: int, cutoff: int) -> int:
    """How many calls of the recursion are parents (above the cutoff)."""
    return 0 if n <= cutoff else 1 + _calls_above(n - 1, cutoff) + _calls_above(n - 2, cutoff)


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"
