"""Helpers shared by the benchmarks: throwaway databases and environments."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import environ
import psycopg

ROOT = Path(__file__).resolve().parents[1]
#: Owners ``owner1`` .. ``owner2000`` that the benchmarks' requests spread over.
OWNERS = 2000
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ledger"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def admin_dsn(url: str, dbname: str = "postgres") -> str:
    config = environ.Env.db_url_config(url)
    dsn = (
        f"host={config['HOST'] or '127.0.0.1'} port={config['PORT'] or 5432} "
        f"user={config['USER'] or 'postgres'} dbname={dbname}"
    )
    if config.get("PASSWORD"):
        dsn += f" password={config['PASSWORD']}"
    return dsn


@contextlib.contextmanager
def temp_database(prefix: str = "ledger_bench", options: str = "") -> Iterator[tuple[str, str]]:
    """A new database (``CREATE DATABASE`` with ``options``, e.g. a locale);
    yields (django url, psycopg dsn); dropped afterwards."""
    base = database_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" {options}')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name, admin_dsn(base, name)
    finally:
        with psycopg.connect(admin_dsn(base), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    """Poll ``url`` (sent with ``headers``) until it answers, or raise TimeoutError."""
    import time
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 (loopback)
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def site_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-not-for-production-use")
    env.setdefault("DJANGO_DEBUG", "0")
    env.update(overrides)
    return env


def stack_env(url: str, run_id: str, metrics_dir: Path, **overrides: str) -> dict[str, str]:
    """The standard stack the benchmarks measure: every feature on (rate
    limits with very high rates, JSON logs, multiprocess metrics), plain HTTP."""
    high = "100000000/m"
    return site_env(
        DATABASE_URL=url,
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/2"),
        CACHE_KEY_PREFIX=f"bench-{run_id}",
        DJANGO_DEBUG="0",
        # Plain HTTP on loopback: the HTTPS redirect would answer every request with a 301.
        DJANGO_SECURE="0",
        RATELIMIT_ENABLE="1",
        RATE_LIMIT_LEDGER_WRITE=high,
        RATE_LIMIT_LEDGER_READ=high,
        RATE_LIMIT_AUTH=high,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        **overrides,
    )


def with_variant(env: dict[str, str], variant: dict[str, str], metrics_dir: Path) -> dict[str, str]:
    """``env`` with an A/B's settings added: the same database, its own cache
    keys and metrics directory."""
    return {**env, **variant, "CACHE_KEY_PREFIX": env["CACHE_KEY_PREFIX"] + "-b",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # fmt: skip


def seed_owners(dsn: str, owners: int = OWNERS) -> None:
    """Balance rows for ``owner1`` .. ``owner<owners>``."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO ledger_core_balance (owner_id, balance, version, updated_at) "
            "SELECT 'owner' || i, 0, 0, now() FROM generate_series(1, %s) AS i",
            [owners],
        )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def service_account_password(output: str) -> str:
    """The password ``manage.py create_service_account`` printed."""
    import re

    match = re.search(r"^password[^:]*: (\S+)$", output, re.M)
    if match is None:
        raise ValueError(f"no password in:\n{output}")
    return match.group(1)
