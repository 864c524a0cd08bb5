"""Seed 002's Celery example on minipool: ``@app.task``, ``.delay()``, ``.id``, ``.get()``.

Celery needs three programs: a broker (Redis, RabbitMQ) holding the queue, workers taking tasks
from it, and a result backend. minipool's coordinator is both broker and backend, and
``Pool()`` starts it with its workers, so the seed's ``tasks.py`` becomes::

    pool = Pool(2)                      # app = Celery('demo', broker=..., backend=...)

    @pool.task                          # @app.task
    def my_task(a, b):
        return a + b

    result = my_task.delay(5, 7)        # enqueue; result.id is the task id
    result.get(timeout=10)              # 12, from the backend

The script also shows ``apply_async(args=..., kwargs=...)``, a task that fails twice and
succeeds on its third attempt (``retries=``), a task whose exception comes back to ``get()``,
a periodic task (Celery beat's interval schedule, ``pool.schedule(fn, every=...)``) and the
coordinator's counters (what Flower shows).

    python examples/celery_style.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from minipool import Pool


def flaky(counter_path: str, succeed_on: int) -> str:
    """Fail until this is attempt number ``succeed_on`` (attempts are counted in a file, since
    each attempt may run on a different worker process)."""
    with open(counter_path, "a+") as f:
        f.write("x")
        f.seek(0)
        attempt = len(f.read())
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt}: the database is not answering")
    return f"succeeded on attempt {attempt}"


def divide(a, b):
    return a / b


def heartbeat() -> str:
    return f"beat from pid {os.getpid()}"


def main() -> int:
    with Pool(2) as pool, tempfile.TemporaryDirectory() as tmp:

        @pool.task  # Celery's @app.task: a function defined anywhere
        def my_task(a, b, scale=1):  # travels to the workers by value
            return (a + b) * scale

        # delay(*args): enqueue and return at once with an AsyncResult
        result = my_task.delay(5, 7)
        print(f"my_task.delay(5, 7): id {result.id}, state {result.state}")
        print(f"  .get() -> {result.get(timeout=10)}, state {result.state}")

        # apply_async(args=..., kwargs=...): the full signature, with options (priority)
        result = my_task.apply_async(args=[2, 3], kwargs={"scale": 10}, priority=5)
        print(f"my_task.apply_async(args=[2, 3], kwargs={{'scale': 10}}) -> {result.get(timeout=10)}")

        # many tasks at once: enqueue all, then collect
        results = [my_task.delay(i, i) for i in range(20)]
        print(f"20 tasks enqueued, results: {[r.get(timeout=10) for r in results][:6]} ...")

        # retries with exponential backoff: two failures, then success
        retrying = pool.task(flaky, retries=3, retry_backoff=0.05)
        counter = os.path.join(tmp, "attempts")
        outcome = retrying.delay(counter, succeed_on=3).get(timeout=10)
        print(f"flaky task with retries=3: {outcome}")

        # an exception in the task comes back to the caller of get()
        failing = pool.task(divide).delay(1, 0)
        try:
            failing.get(timeout=10)
        except ZeroDivisionError as exc:
            print(f"divide(1, 0): state {failing.state}, get() raised ZeroDivisionError({exc})")

        # Celery beat: run heartbeat() on a worker every 0.2 s
        beat = pool.schedule(heartbeat, every=0.2)
        time.sleep(1.1)
        beat.cancel()
        time.sleep(0.2)  # let the last run report back
        print(f"schedule(heartbeat, every=0.2) for 1.1 s: {beat.runs} runs, e.g. {beat.results[:1]}")

        # what Flower shows: workers and task counts
        status = pool.status()
        print(
            f"status: {len(status['workers'])} workers, done {status['done']}, "
            f"failed {status['failed']}, queued {status['queued']}"
        )

        ok = (
            outcome == "succeeded on attempt 3"
            and failing.state == "FAILURE"
            and beat.runs >= 3
            and beat.results
        )
    if not ok:
        print("something did not go as expected!", file=sys.stderr)
        return 1
    print("all Celery-style calls behaved as expected: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
