"""The benchmark's CPU accounting (``bench.run.cpu_seconds``) and its
instruction counts (``bench.instructions.sections``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.instructions import sections
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


SECTIONS = """\
import os
os.getppid()
sum(range(100_000))
os.getppid()
sum(range(1_000_000))
os.getppid()
print("done")
"""


def test_instructions_are_counted_per_section_and_repeat(tmp_path):
    program = [sys.executable, "-c", SECTIONS]
    totals, out = sections(program, tmp_path / "first", dict(os.environ))
    assert out == "done\n"
    # Start-up, then the two sums; what follows the last call is left out.
    assert len(totals) == 3
    assert 9 < totals[2] / totals[1] < 11
    again, _ = sections(program, tmp_path / "again", dict(os.environ))
    assert abs(again[2] / totals[2] - 1) < 0.01
