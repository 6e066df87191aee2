"""The PostgreSQL engine's health check: no round trip on a quiet connection,
and a connection the server closed is replaced before a request uses it."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection

from bench.common import admin_dsn
from ledger_site.db_backends.postgresql.base import socket_is_quiet

pytestmark = pytest.mark.django_db(transaction=True)


def _admin():
    settings = connection.settings_dict
    url = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/postgres"
    if settings.get("PASSWORD"):
        url = url.replace("@", f":{settings['PASSWORD']}@", 1)
    return psycopg.connect(admin_dsn(url), autocommit=True)


def _last_statement(pid: int) -> str:
    with _admin() as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[
            0
        ]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid() /* marker */")
        return cursor.fetchone()[0]


def _new_request() -> None:
    # What Django does at request_started/request_finished for a persistent connection.
    connection.close_if_unusable_or_obsolete()


def test_quiet_connection_is_reused_without_a_query():
    pid = _backend_pid()
    _new_request()
    assert connection.is_usable()
    connection.close_if_health_check_failed()
    assert _backend_pid() == pid
    # The server's last statement from this backend is ours, not a SELECT 1.
    _new_request()
    connection.close_if_health_check_failed()
    assert "marker" in _last_statement(pid)


def test_terminated_backend_is_replaced_before_the_request_uses_it():
    pid = _backend_pid()
    with _admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    deadline = time.monotonic() + 5
    # The FATAL message and the EOF arrive asynchronously.
    while socket_is_quiet(connection.connection.fileno()) and time.monotonic() < deadline:
        time.sleep(0.01)
    _new_request()
    assert not connection.is_usable()
    assert _backend_pid() != pid  # reconnected; the query did not fail


def test_unread_bytes_fall_back_to_select_1():
    # A notification makes the socket readable without breaking the connection:
    # the engine asks the server (SELECT 1) and keeps the healthy connection.
    pid = _backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN ledger_health_test")
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"],
        password=settings.get("PASSWORD") or None, dbname=settings["NAME"], autocommit=True,
    ) as other:  # fmt: skip
        other.execute("NOTIFY ledger_health_test")
    time.sleep(0.2)
    _new_request()
    assert connection.is_usable()
    assert _last_statement(pid) == "SELECT 1"
    assert _backend_pid() == pid
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")
