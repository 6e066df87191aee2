"""PostgreSQL keeps the hot statements prepared (DATABASE_PREPARED_STATEMENTS),
and a server that never answers costs a request seconds (DATABASE_CONNECT_TIMEOUT)."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from ledger_site.backends import user_with_permissions
from tests.conftest import fund
from tests.livehelpers import call, free_port, gunicorn_cmd, gunicorn_env, running_server

pytestmark = pytest.mark.django_db

CONTENT = "/api/content/ledger/"


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_posts_reads_and_the_writers_look_up_are_prepared(manager_client):
    fund("bob", 100)
    for n in range(6):
        response = manager_client.post(
            CONTENT,
            {"owner_id": "bob", "operation": "CREDIT_SPEND", "nonce": f"n{n}"},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert manager_client.get(f"{CONTENT}bob/").status_code == 200
    statements = prepared_statements()
    assert any("INSERT INTO ledger_core_ledgerentry" in s for s in statements), statements
    assert any("ledger_permissions" in s for s in statements), statements
    assert any("FROM ledger_core_balance" in s for s in statements), statements


@pytest.mark.django_db(transaction=True)
def test_a_prepared_user_look_up_survives_a_migration_elsewhere(manager):
    # A column added by a migration run from another process must not break
    # the statement a running worker has prepared ("cached plan must not
    # change result type" for a ``SELECT *``).
    table = get_user_model()._meta.db_table
    for _ in range(6):
        assert user_with_permissions("id", manager.pk).username == "manager"
    assert any("ledger_permissions" in s for s in prepared_statements())
    params = connection.get_connection_params()
    keys = ("dbname", "host", "port", "user", "password")
    with psycopg.connect(**{k: params[k] for k in keys if k in params}, autocommit=True) as other:
        other.execute(f"ALTER TABLE {table} ADD COLUMN nickname text")
        try:
            user = user_with_permissions("id", manager.pk)
        finally:
            other.execute(f"ALTER TABLE {table} DROP COLUMN nickname")
    assert user.username == "manager"
    assert user.has_perm("ledger_core.post_any_entry")


@pytest.mark.slow
def test_a_database_that_accepts_and_never_answers_gets_a_503_in_seconds(tmp_path):
    # As a frozen server does: the kernel completes the handshake, nobody reads.
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        env = gunicorn_env(
            tmp_path,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/ledger",
            DATABASE_CONNECT_TIMEOUT="2",
        )
        web = free_port()
        base = f"http://127.0.0.1:{web}"
        with running_server(gunicorn_cmd(web, 1), env, f"{base}/healthz"):
            started = time.monotonic()
            status, body, _ = call("GET", f"{base}/readyz")
            assert (status, body["checks"]["database"]) == (503, "error: OperationalError")
            status, body, _ = call(
                "POST", f"{base}/api/auth/token/", {"username": "u", "password": "p"}
            )
            assert (status, body["code"]) == (503, "unavailable"), body
            # Each waited the 2 s timeout, not the client's 10 s or gunicorn's 30 s.
            assert time.monotonic() - started < 9
