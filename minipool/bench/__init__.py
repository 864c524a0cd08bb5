"""Side-by-side measurements: ``python -m minipool.bench NAME``.

Technique: *measure against a peer, in the same run*. A shared machine is noisy, so a single
figure means little; every benchmark here runs minipool and its standard-library (or
third-party) peer back to back, repeats each measurement, and reports medians and the ratio
between them. Each subcommand is a module of this package with ``add_arguments(parser)`` and
``run(args) -> dict``; :mod:`minipool.bench.common` holds the table, JSON and timing helpers.
"""
