"""The embedded PostgreSQL of `make run`: a real server from the pgserver wheel.

Design decision: the ledger speaks one SQL dialect, PostgreSQL, so the
zero-set-up default is PostgreSQL too, not another database. pgserver ships
PostgreSQL binaries in a wheel, starts a server on a Unix socket in the data
folder in about a second, and shares it between the processes that ask for it
(the development server, its reloader, a management command run beside it),
stopping it when the last one exits. Production sets ``DATABASE_URL``.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def embedded_database(data_dir: Path) -> dict[str, Any]:
    """Django's ``DATABASES["default"]`` for an embedded server in ``data_dir``, started now."""
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
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        pgserver.get_server(data_dir, cleanup_mode="stop")
    _exit_cleanly_on_sigterm()
    return {
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": str(data_dir),
    }


def _exit_cleanly_on_sigterm() -> None:
    # pgserver stops the server when its last user exits normally; a SIGTERM
    # (a supervisor stopping the development server) would skip that and
    # leave the server running, so it becomes a normal exit.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
