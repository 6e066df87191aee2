"""The embedded PostgreSQL after a server that did not stop cleanly: its
``postmaster.pid`` stays behind, and after a restart of the machine its pid
often names some other process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from ledger_site.embedded import clear_stale_lock, stop
from tests.livehelpers import ROOT

pytestmark = pytest.mark.slow

START = (
    "import sys; from pathlib import Path; "
    "from ledger_site.embedded import embedded_database; embedded_database(Path(sys.argv[1]))"
)


def connect(folder: Path) -> psycopg.Connection:
    """A connection to the embedded server of ``folder``, which a new process
    (as each `make run` and management command is) starts if it is not running."""
    started = subprocess.run(
        [sys.executable, "-c", START, str(folder)], cwd=ROOT, timeout=60, capture_output=True,
        text=True,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    return psycopg.connect(host=str(folder), user="postgres", dbname="postgres", autocommit=True)


def postmaster_pid(folder: Path) -> int:
    return int((folder / "postmaster.pid").read_text().split("\n", 1)[0])


def working_in(folder: Path) -> list[int]:
    """The processes whose working directory is ``folder`` (a server's are)."""
    found = []
    for process in psutil.process_iter():
        try:
            if Path(process.cwd()) == folder.resolve():
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def test_a_running_servers_lock_file_is_kept(embedded_pgdata):
    with connect(embedded_pgdata) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert postmaster_pid(embedded_pgdata) in working_in(embedded_pgdata)
    assert clear_stale_lock(embedded_pgdata) is False
    assert (embedded_pgdata / "postmaster.pid").exists()
    with connect(embedded_pgdata) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_killed_server_whose_pid_another_process_took_starts_again(embedded_pgdata):
    with connect(embedded_pgdata) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('before the crash')")
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    killed = postmaster_pid(embedded_pgdata)
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (working_in(embedded_pgdata) or psutil.pid_exists(killed)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert working_in(embedded_pgdata) == [], "the killed server's processes did not exit"
    locks = [embedded_pgdata / "postmaster.pid", *embedded_pgdata.glob(".s.PGSQL.*.lock")]
    assert len(locks) == 2 and all(str(killed) in lock.read_text() for lock in locks)

    # As after a restart of the machine: the lock files' pid is now another process.
    other = subprocess.Popen(["sleep", "120"])
    try:
        for lock in locks:
            lock.write_text(lock.read_text().replace(str(killed), str(other.pid), 1))

        assert stop(embedded_pgdata) is False  # and it did not signal that process
        assert other.poll() is None
        with connect(embedded_pgdata) as conn:
            assert conn.execute("SELECT value FROM kept").fetchall() == [("before the crash",)]
            assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > started
        assert postmaster_pid(embedded_pgdata) != other.pid
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
