"""`python -m minipool.bench transports` with the tiniest settings: the result's shape."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET

import pytest

from minipool.bench import common, transports


def test_quick_run_one_transport(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    transports.add_arguments(parser)
    svg = tmp_path / "rtt.svg"
    args = parser.parse_args(
        [
            "--quick",
            "--transports",
            "http,nosuch",
            "--peers",
            "",
            "--sizes",
            "64B",
            "--budget",
            "0.02",
            "--svg",
            str(svg),
        ]
    )
    result = transports.run(args)
    impls = [row["impl"] for row in result["rows"]]
    assert impls == ["raw", "http"]  # the floor is always measured beside
    for row in result["rows"]:
        assert row["size"] == 64 and row["codec"] == "none"
        assert row["rtt_us"] > 0 and row["mb_s"] > 0 and row["rtt_ratio"] > 0
        if transports.CAN_PIN:  # timed again with client and server on one core
            assert row["rtt_one_core_us"] > 0 and row["rtt_one_core_ratio"] > 0
    assert result["rows"][0]["rtt_ratio"] == 1.0
    assert "nosuch" in result["skipped"]
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}path")) == 2
    out = capsys.readouterr().out
    assert "| http" in out and "rtt / raw" in out
    assert ("1 core / raw" in out) == transports.CAN_PIN


def test_pinning_moves_every_thread_and_puts_them_back():
    import os
    import threading

    if not transports.CAN_PIN:
        pytest.skip("no sched_setaffinity, no /proc, or a single core")
    everywhere = os.sched_getaffinity(0)
    started, stop = threading.Event(), threading.Event()
    seen = []

    def worker():
        started.set()
        stop.wait(10)
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(10)
    one = {max(everywhere)}
    common.pin([os.getpid()], one)
    try:
        assert os.sched_getaffinity(0) == one
    finally:
        stop.set()
        thread.join(10)
        common.pin([os.getpid()], everywhere)
    assert seen == [one]  # another thread of the process moved too
    assert os.sched_getaffinity(0) == everywhere


def test_an_unknown_size_is_one_clear_line():
    parser = argparse.ArgumentParser()
    transports.add_arguments(parser)
    with pytest.raises(SystemExit, match=r"unknown size 1024 \(choose from 64B, 1KB"):
        transports.run(parser.parse_args(["--sizes", "1024", "--peers", "", "--transports", "tcp"]))
