"""The guided tour (``python -m minipool.demo``): its options, its registry, and one ``--quick
--html`` run of every step whose output is checked for each step's claim.

The whole tour runs once, in one subprocess, for the module (about 30 s on an idle 2-core
machine): one run shares one pool's start-up across the steps, where a run per step would pay
an interpreter and a pool each time, and it is the run a user makes. The tests below read its
stdout and its HTML page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minipool.bench.chart import bar_chart
from minipool.demo import steps as registry
from minipool.demo import tour
from minipool.demo.step import COLUMNS, Outcome, Step

ROOT = Path(__file__).resolve().parents[1]
NAMES = [
    "dispatch",
    "pi",
    "mapreduce",
    "sum",
    "tasks",
    "nested",
    "chunking",
    "rpc",
    "transports",
    "compression",
    "shard",
    "pipeline",
    "streaming",
    "topics",
    "pipesets",
    "balancing",
    "autoscaling",
    "recovery",
    "chaos",
]


def demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minipool.demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def quick_tour(tmp_path_factory):
    page = tmp_path_factory.mktemp("tour") / "tour.html"
    start = time.monotonic()
    done = demo("--quick", "--workers", "2", "--html", str(page))
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr, page.read_text(encoding="utf-8"), elapsed


def section(out: str, name: str) -> str:
    """The part of the tour's stdout that step ``name`` printed."""
    start = out.index(f"\n## {name}: ")
    end = out.find("\n## ", start + 1)
    return out[start : end if end != -1 else len(out)]


def test_every_step_named_by_the_articles_is_registered():
    assert [step.name for step in registry.STEPS] == NAMES


def test_list_names_every_step_with_what_it_teaches():
    done = demo("--list")
    assert done.returncode == 0
    for step in registry.STEPS:
        assert re.search(rf"^{step.name}\s+{re.escape(step.title)}$", done.stdout, re.M)
        assert step.teaches in done.stdout


def test_only_an_unknown_step_is_refused_with_the_list():
    done = demo("--only", "pi,nosuch")
    assert done.returncode == 2
    assert "no step 'nosuch'" in done.stderr and "dispatch, pi, mapreduce" in done.stderr


def test_a_step_is_one_function_registered_in_one_list(monkeypatch, capsys, tmp_path):
    def hello(context):
        return Outcome(
            COLUMNS + ["figure"],
            [["hello", 1, 3, 0.5, 42.0]],
            "42 of them",
            "It said hello.",
            {"hello": 42.0},
            "things",
        )

    monkeypatch.setattr(
        registry, "STEPS", [*registry.STEPS, Step("hello", "a new step", "One sentence.", hello)]
    )
    page = tmp_path / "one.html"
    assert tour.main(["--only", "hello", "--html", str(page)]) == 0
    out = capsys.readouterr()
    assert "## hello: a new step" in out.out and "It said hello." in out.out
    assert "[1/1] hello" in out.err  # progress, on stderr
    html = page.read_text()
    assert 'id="step-hello"' in html and "<svg" in html and "42 of them" in html


def test_a_failing_step_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken(context):
        raise RuntimeError("the step broke")

    def fine(context):
        return Outcome(COLUMNS, [["fine", 1, 1, 0.1]], "fine", "It ran.", {"fine": 1.0}, "s")

    monkeypatch.setattr(
        registry,
        "STEPS",
        [Step("broken", "breaks", "Nothing.", broken), Step("fine", "runs", "Something.", fine)],
    )
    assert tour.main([]) == 1
    out = capsys.readouterr()
    assert "broken FAILED: RuntimeError('the step broke')" in out.err and "Traceback" in out.err
    assert "## fine: runs" in out.out and "failed: broken" in out.out


def test_bar_chart_draws_a_bar_per_value_longest_for_the_largest():
    svg = bar_chart({"small": 1.0, "large": 4.0}, "title", unit="units", peers={"small"})
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="([\d.]+)"', svg)]
    assert len(widths) == 2 and widths[1] == 4 * widths[0]
    assert ">small (peer)</text>" in svg and svg.count('fill="#999999"') == 1
    assert svg.startswith("<svg") and "units" in svg


def test_quick_runs_every_step_in_time_with_progress(quick_tour):
    out, err, _, elapsed = quick_tour
    for number, name in enumerate(NAMES, 1):
        assert f"[{number}/{len(NAMES)}] {name}" in err
        table = section(out, name)
        assert re.search(r"\| what +\| +workers +\| +tasks +\| +seconds +\|", table), table
        assert "Teaches: " in table
    assert "The tour on" in out
    assert "live dashboard while the tour runs: http://127.0.0.1:" in err
    # The budget is 60 s on 2 idle cores; a shared machine gets slack, not a pass for anything.
    assert elapsed < 120, f"the quick tour took {elapsed:.0f} s"


def test_html_page_has_every_step_table_and_chart(quick_tour):
    _, _, html, _ = quick_tour
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "src=" not in html
    for name in NAMES:
        part = html[html.index(f'id="step-{name}"') :]
        part = part[: part.index("</section>")]
        assert '<table class="step">' in part and "<th>workers</th>" in part
        assert part.count("<svg") == 1 and "<rect" in part
        if name not in ("compression", "autoscaling"):  # a timeline and a table of codecs: no peer bar
            assert part.count('fill="#999999"') == 1 and "(peer)</text>" in part


def ratio(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in\n{text}"
    return float(match.group(1))


def test_each_verdict_agrees_with_its_own_numbers(quick_tour):
    out = quick_tour[0]
    pi = section(out, "pi")
    assert re.search(r"pi ~ 3\.1\d+", pi)
    speedup = ratio(pi, r"\| Pool\.map +\|.*\| +([\d.]+) \|\n")
    if abs(speedup - 1.15) > 0.01:  # the table rounds to two places
        assert ("enough work to hide" in pi) == (speedup >= 1.15)
    total = section(out, "sum")
    shipped = ratio(total, r"\| Pool\.map, the list shipped +\|[^\n]*\| +([\d.]+) \|\n")
    assert shipped < 1 and "costs more than the adding" in total  # the lesson of seed 003's sum
    assert "equal to the serial fold" in section(out, "mapreduce")
    tasks = section(out, "tasks")
    assert "succeeded on attempt 3" in tasks and "the high ones ran first: yes" in tasks
    rpc = section(out, "rpc")
    assert "'Hi welcome LiLei'" in rpc and "'complete at 1'" in rpc
    transports = section(out, "transports")
    assert "| tcp://" in transports and "| http://" in transports and "| ws://" in transports
    assert ("| tls://" in transports) == (shutil.which("openssl") is not None)  # it makes the cert
    assert ("| zmq+tcp://" in transports) == (importlib.util.find_spec("zmq") is not None)
    compression = section(out, "compression")
    assert all(f"gzip level {n}, JSON logs" in compression for n in range(1, 10))
    assert "pays below" in compression
    assert "every count equal to the serial Counter's" in section(out, "shard")
    chunking = section(out, "chunking")
    two = ratio(chunking, r"\| uneven items, map\(chunksize=20\) +\| +2 \| +40 \| +([\d.]+) \|")
    auto = ratio(chunking, r"\| uneven items, map\(chunksize=None\) +\| +2 \| +40 \| +([\d.]+) \|")
    if abs(two / auto - 1.15) > 0.05:  # the table rounds the seconds
        assert ("x the time automatic chunks took" in chunking) == (two / auto >= 1.15)
    assert "coroutine" in section(out, "pipeline")
    assert "reached 100" in section(out, "streaming")
    recursion = section(out, "nested")  # more parents waited than there are slots, and no deadlock
    assert "equal to the serial recursion's: yes" in recursion
    assert ratio(recursion, r"\| child tasks on the pool +\| +2 \| +\d+ \| +[\d.]+ \| +(\d+) \|") > 2
    sets = section(out, "pipesets")  # an instance killed: nothing lost, nothing made twice
    assert re.search(
        r"\| 2 instances, one SIGKILLed +\| +2 \| +(\d+) \| +[\d.]+ \| +\1 \| +0 \| +0 \|", sets
    ), sets
    log = section(out, "topics")  # a member killed mid-stream, and nothing lost
    assert re.search(r"\| the surviving member +\| +1 \| +\d+ \| +[\d.]+ \| +\d+ \| +0 \|", log), log
    autoscaling = section(out, "autoscaling")
    peak = ratio(autoscaling, r"added workers up to (\d+)")
    assert peak > 1 and "it shrank back to 1" in autoscaling  # grew for the burst, then retired them
    for name in ("recovery", "chaos"):
        part = section(out, name)
        assert " NO " not in part and "A RESULT WAS WRONG" not in part
        assert len(re.findall(r"\| +yes \|", part)) >= 3
