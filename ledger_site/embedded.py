"""The embedded PostgreSQL of `make run`: a real server from the pgserver wheel.

Design decision: the ledger speaks one SQL dialect, PostgreSQL, so the
zero-set-up default is PostgreSQL too, not another database. pgserver ships
PostgreSQL binaries in a wheel and starts a server on a Unix socket in the
data folder in about a second. The first process that needs it (`make run`,
a management command) starts it, and it keeps running, like any local
development database, until `make stop` (``python -m ledger_site.embedded
stop``): every later process, and several at once, use the same server, and
no process's exit can pull it from under the others. Production sets
``DATABASE_URL``.

A server that did not stop cleanly (killed, or the machine restarted) leaves
its ``postmaster.pid`` behind, and its pid may by then name another process:
pgserver would take that for the running server and PostgreSQL would refuse
to start. So a process counts as the server only if it works in the data
folder (a postmaster's working directory is its data directory), and the lock
files are removed once no process works there any more.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    import psutil  # the `embedded` extra, with pgserver
except ImportError:  # embedded_database() says what to install
    psutil = None

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "var" / "pgdata"


def data_dir() -> Path:
    """Where the embedded server keeps its data (``EMBEDDED_PGDATA``)."""
    return Path(os.environ.get("EMBEDDED_PGDATA") or DEFAULT_DATA_DIR)


def embedded_database(folder: Path) -> dict[str, Any]:
    """Django's ``DATABASES["default"]`` for the embedded server in ``folder``,
    started now if it is not running."""
    try:
        with warnings.catch_warnings():
            # platformdirs' note that XDG_RUNTIME_DIR is unset (containers, CI) is
            # noise here: pgserver keeps its state in the data folder.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pgserver
    except ImportError as exc:
        raise ImproperlyConfigured(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed. "
            "Set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/ledger) or "
            "install it: pip install 'shared-ledger[embedded]' (`make run` does)."
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        pgserver.get_server(folder, cleanup_mode=None)
    return {
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": str(folder),
    }


def _works_in(process: psutil.Process, folder: Path) -> bool:
    """Whether ``process`` has ``folder`` as its working directory (False if it
    is gone, a zombie, or not ours to inspect: the embedded server runs as
    this user, or under root as pgserver's own user, which root may inspect)."""
    try:
        return Path(process.cwd()) == folder.resolve()
    except psutil.Error:
        return False


def _postmaster(folder: Path) -> psutil.Process | None:
    """The running server of ``folder``: the process ``postmaster.pid`` names,
    if it works in ``folder``; None otherwise."""
    try:
        pid = int((folder / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
    except (FileNotFoundError, ValueError, psutil.Error):
        return None
    return process if _works_in(process, folder) else None


def clear_stale_lock(folder: Path) -> bool:
    """Remove the lock files (``postmaster.pid``, and the socket's
    ``.s.PGSQL.<port>.lock``, which names the same pid) of a server of
    ``folder`` that is gone; True if it did. While any process still works in
    ``folder`` (the server, or a backend its killed postmaster left behind),
    they stay and PostgreSQL's own checks decide."""
    pid_file = folder / "postmaster.pid"
    if not pid_file.exists() or _postmaster(folder) is not None:
        return False
    if any(_works_in(process, folder) for process in psutil.process_iter()):
        return False
    for lock in [pid_file, *folder.glob(".s.PGSQL.*.lock")]:
        lock.unlink(missing_ok=True)
    return True


def stop(folder: Path, timeout: float = 30) -> bool:
    """Stop the server of ``folder`` (PostgreSQL's fast shutdown: SIGINT to its
    postmaster); False if none was running. A ``postmaster.pid`` whose pid is
    not that server's (a stale file) is left alone, and so is that process."""
    postmaster = _postmaster(folder)
    if postmaster is None:
        return False
    try:
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise TimeoutError(
            f"the embedded PostgreSQL (pid {postmaster.pid}) did not stop in {timeout} s"
        ) from None
    return True


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m ledger_site.embedded stop")
    folder = data_dir()
    print(("stopped" if stop(folder) else "not running:") + f" embedded PostgreSQL in {folder}")
