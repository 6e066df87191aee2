"""Faults: a gunicorn worker killed under load loses no acknowledged entry, and
a client that retries what it could not get an answer for never pays twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bench.common import admin_dsn, service_account_password
from tests.livehelpers import (
    call,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
    temp_database,
)

pytestmark = pytest.mark.slow

LOAD_SECONDS = 4.0
THREADS = 4


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()]


def test_killed_worker_loses_no_acknowledged_entry(tmp_path):
    with temp_database() as database_url:
        env = gunicorn_env(tmp_path, DATABASE_URL=database_url, RATELIMIT_ENABLE="0")
        manage(env, "migrate", "--noinput")
        out = manage(env, "create_service_account", "fault-manager").stdout
        password = service_account_password(out)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with running_server(gunicorn_cmd(port, 2), env, f"{base}/healthz") as server:
            _, tokens, _ = call(
                "POST",
                f"{base}/api/auth/token/",
                {"username": "fault-manager", "password": password},
            )
            token = tokens["access"]
            acknowledged: dict[str, int] = {}  # nonce -> entry id
            unanswered: list[dict] = []
            lock = threading.Lock()
            stop = time.monotonic() + LOAD_SECONDS

            def load(worker: int) -> None:
                n = 0
                while time.monotonic() < stop:
                    n += 1
                    body = {
                        "owner_id": f"owner{n % 5}",
                        "operation": "CREDIT_ADD",
                        "nonce": f"t{worker}-{n}",
                        "amount": 1,
                    }
                    try:
                        status, answer, _ = call("POST", f"{base}/api/content/ledger/", body, token)
                    except OSError:
                        status, answer = None, {}
                    with lock:
                        if status in (200, 201):
                            acknowledged[body["nonce"]] = answer["id"]
                        else:
                            unanswered.append(body)

            threads = [threading.Thread(target=load, args=(i,)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            time.sleep(LOAD_SECONDS / 3)
            victims = worker_pids(server.pid)
            assert victims, "no gunicorn workers found"
            os.kill(victims[0], signal.SIGKILL)
            for thread in threads:
                thread.join(LOAD_SECONDS + 30)
            assert acknowledged, "no post was acknowledged"
            # The worker died (the master replaced it) while posts were in flight.
            assert victims[0] not in worker_pids(server.pid)
            assert len(worker_pids(server.pid)) == 2

            # A client retries every post it got no answer for, with the same nonce.
            for body in unanswered:
                status, answer, _ = call("POST", f"{base}/api/content/ledger/", body, token)
                assert status in (200, 201), answer
                acknowledged[body["nonce"]] = answer["id"]

        dsn = admin_dsn(database_url, database_url.rsplit("/", 1)[1])
        with psycopg.connect(dsn) as conn:
            stored = dict(conn.execute("SELECT nonce, id FROM ledger_core_ledgerentry").fetchall())
        assert stored == acknowledged  # every acknowledged entry, each exactly once
        report = manage(env, "verify_ledger", "--no-progress").stdout
        assert "ledger consistent" in report, report
