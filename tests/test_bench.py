"""The benchmark's CPU accounting (``bench.run.cpu_seconds``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.run import cpu_seconds, cpu_used


def web_seconds(before: dict) -> float:
    return cpu_used(before, cpu_seconds(os.getpid()))["web"]


def test_cpu_of_a_child_counts_as_the_servers_workers():
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy + "input()"], stdin=subprocess.PIPE)
    try:
        before = cpu_seconds(os.getpid())
        # The child spins for 0.5 s of CPU, then waits for its input.
        deadline = time.monotonic() + 20
        while web_seconds(before) < 0.3:
            assert child.poll() is None
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
        # It has no children of its own.
        assert all(kind != "web" for kind, _ in cpu_seconds(child.pid).values())
    finally:
        child.communicate(b"\n", timeout=10)


def test_a_process_that_ended_counts_nothing():
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    before = {**cpu_seconds(os.getpid()), child.pid: ("web", 5.0)}
    child.communicate(b"\n", timeout=10)
    assert 0 <= web_seconds(before) < 1
