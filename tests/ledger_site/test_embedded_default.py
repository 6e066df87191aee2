"""The zero-setup default: no DATABASE_URL, no REDIS_URL -> an embedded PostgreSQL
and an in-process cache."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common import service_account_password
from tests.factories import PASSWORD
from tests.livehelpers import ROOT, call, free_port, manage, running_server, site_env

pytestmark = pytest.mark.slow


def test_site_runs_on_embedded_postgresql_without_any_server(tmp_path, embedded_pgdata):
    env = site_env(
        DATABASE_URL=None,
        REDIS_URL=None,
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY=None,
        EMBEDDED_PGDATA=str(embedded_pgdata),
    )
    manage(env, "migrate", "--noinput")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with running_server(cmd, env, f"{base}/healthz"):
        status, body, _ = call(
            "POST", f"{base}/api/auth/register/", {"username": "first-user", "password": PASSWORD}
        )
        assert status == 201, body
        assert body["balance"] == 3
        status, tokens, _ = call(
            "POST", f"{base}/api/auth/token/", {"username": "first-user", "password": PASSWORD}
        )
        assert status == 200, tokens
        access = tokens["access"]
        post = {"owner_id": "first-user", "operation": "CREDIT_SPEND", "nonce": "e2e-1"}
        status, entry, _ = call("POST", f"{base}/api/content/ledger/", post, access)
        assert status == 201, entry
        assert entry["balance_after"] == 2
        status, _, headers = call("POST", f"{base}/api/content/ledger/", post, access)
        assert status == 200 and headers.get("Idempotent-Replayed") == "true"
        status, balance, _ = call("GET", f"{base}/api/content/ledger/first-user/", token=access)
        assert (status, balance["balance"]) == (200, 2)
        status, ready, _ = call("GET", f"{base}/readyz")
        assert status == 200 and ready["checks"] == {"database": "ok", "cache": "ok"}

        # A manager's batch and an item paid with credits, on the embedded server too.
        out = manage(env, "create_service_account", "first-manager").stdout
        password = service_account_password(out)
        _, manager, _ = call(
            "POST", f"{base}/api/auth/token/", {"username": "first-manager", "password": password}
        )
        batch = {
            "entries": [
                {"owner_id": "first-user", "operation": "CREDIT_ADD", "nonce": "b1", "amount": 10},
                {"owner_id": "other", "operation": "CREDIT_ADD", "nonce": "b2", "amount": 4},
            ]
        }
        status, body, _ = call(
            "POST", f"{base}/api/content/ledger/batch/", batch, manager["access"]
        )
        assert status == 201, body
        assert [r["entry"]["balance_after"] for r in body["results"]] == [12, 4]
        status, item, _ = call(
            "POST", f"{base}/api/content/items/", {"title": "t", "body": "b"}, access
        )
        assert status == 201, item
        status, balance, _ = call("GET", f"{base}/api/content/ledger/first-user/", token=access)
        assert balance["balance"] == 7
    manage(
            env, "grant_credits", "--owner", "third", "--amount", "3", "--nonce", "g",
            "--allow-new-owners",
        )  # fmt: skip
    assert "ledger consistent" in manage(env, "verify_ledger", "--no-progress").stdout
    # The server lives in the given folder and keeps running until stopped.
    pgdata = tmp_path / "pgdata"
    assert (pgdata / "PG_VERSION").exists() and (pgdata / "postmaster.pid").exists()
    stopped = subprocess.run(
        [sys.executable, "-m", "ledger_site.embedded", "stop"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stopped.returncode == 0 and "stopped embedded PostgreSQL" in stopped.stdout
    assert not (pgdata / "postmaster.pid").exists()
