"""How the tour shows what it measured: a Markdown table per step on the terminal, and one
self-contained HTML page (every table and an inline SVG bar chart per step) to hand in or
project.

Technique: *output in one place*. Steps return data (:class:`.step.Outcome`); only this module
turns it into text, so the terminal and the page never disagree, and the page needs no
library, no script and no file beside it.
"""

from __future__ import annotations

import html
import os
import platform
import time
from collections.abc import Sequence

from ..bench.chart import bar_chart
from ..bench.common import format_table
from .step import Outcome, Step

__all__ = ["print_step", "summary_rows", "SUMMARY_HEADERS", "html_page"]

SUMMARY_HEADERS = ["step", "workers", "tasks", "seconds", "the figure that matters"]


def print_step(step: Step, outcome: Outcome) -> None:
    print(f"\n## {step.name}: {step.title}\n")
    print(f"Teaches: {step.teaches}\n")
    print(format_table(outcome.headers, outcome.rows))
    for note in outcome.notes:
        print(f"  {note}")
    print(f"\n{outcome.verdict}", flush=True)


def _largest(outcome: Outcome, column: str) -> int:
    index = outcome.headers.index(column)
    return max((row[index] for row in outcome.rows if isinstance(row[index], int)), default=0)


def summary_rows(done: Sequence[tuple[Step, Outcome]]) -> list[list[object]]:
    return [
        [step.name, _largest(o, "workers"), _largest(o, "tasks"), o.seconds, o.headline] for step, o in done
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], kind: str = "step") -> str:
    lines = format_table(headers, rows).splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[:1] + lines[2:]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.summary td:last-child { text-align: left; }
.teaches { font-style: italic; } .verdict { background: #f4f4f4; padding: 0.5em; }
section { border-top: 1px solid #ddd; margin-top: 1.5em; }
"""


def html_page(done: Sequence[tuple[Step, Outcome]], command: str, total: float) -> str:
    """One HTML page: the summary, then per step its sentence, table, notes, verdict and chart."""
    sections = []
    for step, outcome in done:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in outcome.notes)
        chart = bar_chart(
            outcome.chart, f"{step.name}: {outcome.headline}", unit=outcome.unit, peers={outcome.peer}
        )
        sections.append(
            f'<section id="step-{step.name}"><h2>{html.escape(step.name)}: {html.escape(step.title)}</h2>'
            f'<p class="teaches">{html.escape(step.teaches)}</p>'
            f"{_table(outcome.headers, outcome.rows)}"
            + (f"<ul>{notes}</ul>" if notes else "")
            + f'<p class="verdict">{html.escape(outcome.verdict)}</p>'
            f'<figure class="chart">{chart}</figure></section>'
        )
    machine = f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, {platform.platform()}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>minipool tour</title><style>{_STYLE}</style></head><body>"
        f"<h1>minipool: a guided tour of the articles' techniques</h1>"
        f"<p>Run as <code>{html.escape(command)}</code> on {html.escape(machine)}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {total:.1f} s in all. Single runs on a machine that may "
        "be shared: each technique is measured in turns with its peer, so ratios are fairer than "
        "seconds.</p>"
        f"{_table(SUMMARY_HEADERS, summary_rows(done), 'summary')}" + "".join(sections) + "</body></html>\n"
    )
