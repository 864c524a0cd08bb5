"""Task functions that submit tasks, for tests/test_nested.py. Workers import this module by
name, as they would any module of a user's project."""

import concurrent.futures
import os
import time

from minipool import current_pool


def fib_serial(n):
    return n if n < 2 else fib_serial(n - 1) + fib_serial(n - 2)


def fib(n, cutoff):
    """Recursive Fibonacci: below ``cutoff`` serially, above it as two child tasks."""
    if n <= cutoff:
        return fib_serial(n)
    pool = current_pool()
    a = pool.submit(fib, n - 1, cutoff)
    b = pool.submit(fib, n - 2, cutoff)
    return a.result() + b.result()


def quicksort(items, cutoff=8):
    """Parallel quicksort: both partitions are child tasks, waited on with wait()."""
    if len(items) <= cutoff:
        return sorted(items)
    pivot, rest = items[0], items[1:]
    pool = current_pool()
    low = pool.submit(quicksort, [x for x in rest if x < pivot], cutoff)
    high = pool.submit(quicksort, [x for x in rest if x >= pivot], cutoff)
    concurrent.futures.wait([low, high])
    return low.result() + [pivot] + high.result()


def squares_via(kind, n):
    pool = current_pool()
    if kind == "map":
        return list(pool.map(fib_serial, range(n)))
    if kind == "map_reduce":
        return pool.map_reduce(fib_serial, lambda a, b: a + b, range(n), chunksize=2)
    if kind == "map_unordered":
        return sorted(pool.map_unordered(fib_serial, range(n)))
    if kind == "as_completed":
        futures = [pool.submit(fib_serial, i) for i in range(n)]
        return sorted(f.result() for f in concurrent.futures.as_completed(futures))
    raise ValueError(kind)


def child_fails():
    try:
        current_pool().submit(fail_with, "child broke").result()
    except ValueError as exc:
        return f"caught {exc}"
    return "no error"


def fail_with(message):
    raise ValueError(message)


def outside():
    return current_pool()


def submit_many(count, wait_each=True):
    """Submit ``count`` trivial child tasks; return the seconds it took."""
    pool = current_pool()
    started = time.perf_counter()
    if wait_each:
        for _ in range(count):
            pool.submit(fib_serial, 1).result()
    else:
        futures = [pool.submit(fib_serial, 1) for _ in range(count)]
        for f in futures:
            f.result()
    return time.perf_counter() - started


def delay_inside(task_function, n):
    """A @pool.task function that travelled into a task: its .delay() runs there."""
    return task_function.delay(n).get(30) + current_pool().task(fib_serial).delay(n).get(30)


def mark_then(path, value):
    with open(path, "a") as f:
        f.write("run\n")
    time.sleep(0.05)
    return value


def parent_dies_once(folder, children):
    """Submit children, then kill this worker the first time; the rerun submits them again."""
    pool = current_pool()
    futures = [pool.submit(mark_then, os.path.join(folder, "children"), 1) for _ in range(children)]
    died = os.path.join(folder, "died")
    if not os.path.exists(died):
        open(died, "w").close()
        time.sleep(0.2)  # the SUBMITs are out; some children are queued
        os._exit(1)
    return sum(f.result() for f in futures)


def set_greeting(word):
    global GREETING
    GREETING = word


def greet_child():
    return GREETING


def greet_from_children(count):
    """The pool's initializer ran wherever these children run: they carry it."""
    pool = current_pool()
    return [f.result() for f in [pool.submit(greet_child) for _ in range(count)]]


def parent_after_nap(seconds):
    """Submit a child, stay busy while it is queued at this same worker, then wait for it."""
    child = current_pool().submit(fib_serial, 10)
    time.sleep(seconds)
    return child.result()


def fib_through(n, cutoff):
    """``fib`` whose children all go through the coordinator (none kept in the worker)."""
    if n <= cutoff:
        return fib_serial(n)
    pool = current_pool(keep_children=False)
    a = pool.submit(fib_through, n - 1, cutoff)
    b = pool.submit(fib_through, n - 2, cutoff)
    return a.result() + b.result()


def fib_logged(n, cutoff, path):
    """``fib`` that appends a line ``pid n`` to ``path`` each time one of its tasks runs."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {n}\n")
    if n <= cutoff:
        return fib_serial(n)
    pool = current_pool()
    a = pool.submit(fib_logged, n - 1, cutoff, path)
    b = pool.submit(fib_logged, n - 2, cutoff, path)
    return a.result() + b.result()


def thief_dies_once(folder, parent_pid, value):
    """A child that kills its worker the first time it runs anywhere but its parent's worker
    (it was stolen), after a moment of work; then returns ``value``."""
    marker = os.path.join(folder, "thief died")
    if os.getpid() != parent_pid and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    time.sleep(0.02)
    return value


def parent_of_a_dying_thief(folder, children):
    """Keep ``children`` children, then wait on each in turn: the idle worker steals some."""
    pool = current_pool()
    futures = [pool.submit(thief_dies_once, folder, os.getpid(), i) for i in range(children)]
    return [f.result() for f in futures]


def cancel_a_kept_child(path):
    """Cancel a kept child before anything could run it: it never runs."""
    child = current_pool().submit(mark_then, path, 1)
    return child.cancel(), child.cancelled(), os.path.exists(path)


def sleepy_children(count, seconds):
    """Submit ``count`` children that sleep, wait on each in turn; the seconds it all took."""
    pool = current_pool()
    started = time.perf_counter()
    futures = [pool.submit(time.sleep, seconds) for _ in range(count)]
    for f in futures:
        f.result()
    return time.perf_counter() - started


def kept_after(how):
    """How many of three children submitted ``how`` this worker keeps just after, and the sum
    of their values."""
    pool = current_pool()
    if how == "delay":
        handles = [pool.task(fib_serial).delay(10) for _ in range(3)]
        return len(pool._client.children), sum(h.get(30) for h in handles)
    if how == "submit_with":
        futures = [pool.submit_with(fib_serial, (10,), priority=1) for _ in range(3)]
    elif how == "keep_children=False":
        futures = [current_pool(keep_children=False).submit(fib_serial, 10) for _ in range(3)]
    else:
        futures = [pool.submit(fib_serial, 10) for _ in range(3)]
    return len(pool._client.children), sum(f.result(30) for f in futures)


def identity(value):
    return id(value)


def contents(items):
    return list(items)


def kept_as_calls():
    """A child with constant arguments runs on the very objects (kept as the call); one whose
    arguments could change runs on a copy taken at submit, whatever its parent does after."""
    pool = current_pool()
    data = b"x" * 1000
    items = [1, 2, 3]
    pool.submit(identity, 0).result()  # each function is packed once before it is kept as a call
    pool.submit(contents, ()).result()
    same = pool.submit(identity, data)
    copied = pool.submit(contents, items)
    items.append(4)
    return same.result() == id(data), copied.result()


def switch_interval_while_keeping():
    """The GIL switch interval while this task keeps a child, and its child's value."""
    import sys

    child = current_pool().submit(fib_serial, 10)
    while_kept = sys.getswitchinterval()
    return while_kept, child.result()


def switch_interval():
    import sys

    return sys.getswitchinterval()


def nap_then(seconds, word):
    time.sleep(seconds)
    return word


def long_then_quick(seconds):
    """Two children kept: the first runs ``seconds`` in this task's thread, the second after."""
    pool = current_pool()
    long = pool.submit(nap_then, seconds, "long")
    quick = pool.submit(nap_then, 0.0, "quick")
    return f"{long.result()}, {quick.result()}"
