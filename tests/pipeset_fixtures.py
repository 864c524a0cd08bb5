"""Pipe sets the pipe set tests serve (instance processes import them by MODULE:NAME)."""

from minipool import pipeline as pl
from minipool.pipesets import PipeSet, to_channel


def square(n):
    if n == 13:
        raise ValueError("unlucky")
    return {"n": n, "square": n * n}


squares = PipeSet("squares", source="numbers", fragment=pl.map(square), output="squared")

split = PipeSet(
    "split",
    source="numbers",
    fragment=pl.filter(lambda n: n >= 0) | to_channel(lambda n: "even" if n % 2 == 0 else "odd"),
)
