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
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        pgserver.get_server(folder, cleanup_mode=None)
    return {
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": str(folder),
    }


def stop(folder: Path, timeout: float = 30) -> bool:
    """Stop the server of ``folder`` (PostgreSQL's fast shutdown: SIGINT to the
    postmaster named in ``postmaster.pid``); False if none was running."""
    pid_file = folder / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop in {timeout} s")


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m ledger_site.embedded stop")
    folder = data_dir()
    print(("stopped" if stop(folder) else "not running:") + f" embedded PostgreSQL in {folder}")
