"""Start the site as a real server process for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import common

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    return common.free_port()


def site_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(  # noqa: S603 (our own command line)
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def wait_for(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
    common.wait_up(url, timeout, headers)


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The sum of every sample per sample name, from one scrape of ``url``."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@contextlib.contextmanager
def running_server(
    cmd: list[str],
    env: dict[str, str],
    health_url: str,
    log_path: Path | None = None,
    health_headers: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until the block ends, once ``health_url`` (asked with
    ``health_headers``) answers; its output goes to ``log_path`` (or a temp file)."""
    import tempfile

    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="ledger-server-", suffix=".log")[1])
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(  # noqa: S603 (our own command line)
            cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True
        )
        try:
            try:
                wait_for(health_url, headers=health_headers)
            except TimeoutError:
                proc.kill()
                proc.wait(timeout=10)
                tail = log_path.read_text()[-5000:]
                raise AssertionError(f"server failed to start:\n{tail}") from None
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def call(
    method: str,
    url: str,
    body: dict | None = None,
    token: str | None = None,
    request_id: str | None = None,
) -> tuple[int, dict, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Accept", "application/json")
    if request_id is not None:
        request.add_header("X-Request-ID", request_id)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
            return response.status, (json.loads(raw) if raw else {}), dict(response.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, (json.loads(raw) if raw else {}), dict(err.headers)


@contextlib.contextmanager
def temp_database(options: str = "") -> Iterator[str]:
    """A fresh PostgreSQL database for a live server (migrate it); dropped
    afterwards. ``options`` go to ``CREATE DATABASE`` (a locale, say)."""
    with common.temp_database("ledger_live", options) as (url, _dsn):
        yield url


def gunicorn_cmd(port: int, workers: int = 3, *extra: str) -> list[str]:
    """gunicorn with the production configuration (docker/gunicorn.conf.py)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "docker" / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *extra,
    ]


def gunicorn_env(tmp: Path, **overrides: str | None) -> dict[str, str]:
    """Environment for a gunicorn under test: its own metrics directory."""
    return site_env(PROMETHEUS_MULTIPROC_DIR=str(tmp / "prometheus-multiproc"), **overrides)


def dead_redis_caches() -> dict:
    """``CACHES`` pointing every alias at a port where no Redis listens."""
    location = f"redis://127.0.0.1:{free_port()}/0"
    options = {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}
    return {
        alias: {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location,
                "OPTIONS": options}
        for alias in ("default", "ratelimit")
    }  # fmt: skip
