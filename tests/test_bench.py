"""The benchmark's CPU accounting (``bench.run.cpu_seconds``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.run import cpu_seconds


def test_cpu_of_a_child_counts_as_the_servers_workers():
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy + "input()"], stdin=subprocess.PIPE)
    try:
        before = cpu_seconds(os.getpid())["web"]
        # The child spins for 0.5 s of CPU, then waits for its input.
        deadline = time.monotonic() + 20
        while cpu_seconds(os.getpid())["web"] - before < 0.3:
            assert child.poll() is None
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
        assert cpu_seconds(child.pid)["web"] == 0.0  # it has no children of its own
    finally:
        child.communicate(b"\n", timeout=10)
