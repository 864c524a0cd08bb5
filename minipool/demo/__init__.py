"""``python -m minipool.demo``: a guided tour of the articles' techniques, measured on this machine.

Each step runs one technique beside its peer (serial code, the standard library's pool, another
transport, codec or policy), taking turns so a busy machine slows both alike, and prints a table
(workers, tasks, seconds, the figure that matters and the peer's), the one sentence it teaches,
and a verdict the numbers support -- including where the technique does not pay.

    python -m minipool.demo                 # every step
    python -m minipool.demo --quick         # every step at small sizes, under a minute
    python -m minipool.demo --list          # the steps and what each teaches
    python -m minipool.demo --only pi,sum   # some steps
    python -m minipool.demo --html tour.html

The package: :mod:`.step` (what a step is), :mod:`.steps` (the list of steps, in order), one
module per group of steps (:mod:`.compute`, ...), :mod:`.report` (tables and the HTML page)
and :mod:`.tour` (the command line).
"""
