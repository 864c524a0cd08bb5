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

# A fast pipe between two pipe sets: "halves" pushes straight to the instances of "doubled".
halves = PipeSet(
    "halves", source="numbers", fragment=pl.map(lambda n: n / 2), output="halved", fast=("halved",)
)
doubled = PipeSet(
    "doubled", source="halved", fragment=pl.map(lambda x: int(x * 2)), output="whole", fast=("halved",)
)

# At most 50 of its outputs may wait in "kept" for that channel's slowest consumer group.
capped = PipeSet("capped", source="numbers", fragment=pl.map(lambda n: n), output="kept", cap=50)
