"""Shared fixtures: users in each role, authenticated API clients, funding."""

from __future__ import annotations

import contextlib

import pytest
from django.core.cache import caches
from django.db.backends.signals import connection_created
from rest_framework.test import APIClient

from ledger_core.actors import Actor
from ledger_core.services import entry_post
from ledger_site.jwt import token_pair_for
from tests.factories import UserFactory


def _allow_flushing_test_databases(sender, connection, **kwargs) -> None:
    # Django empties test databases between transactional tests with TRUNCATE,
    # which the ledger tables refuse unless the session says so
    # (ledger_core/migrations/0003_no_truncate.py). Only test databases do.
    if str(connection.settings_dict["NAME"] or "").startswith("test_"):
        with connection.cursor() as cursor:
            cursor.execute("SET ledger.allow_truncate = 'on'")


connection_created.connect(_allow_flushing_test_databases, dispatch_uid="tests.allow_truncate")


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2's deliberate slowness buys nothing in tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_caches():
    from ledger_site.ratelimit import outage

    outage.until = 0.0
    for alias in caches:
        # A cache pointed at a dead server in a test must not break the others.
        with contextlib.suppress(Exception):
            caches[alias].clear()
    yield


def bearer_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_for(user).access_token}")
    return client


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory(username="alice")


@pytest.fixture
def other_user(db):
    return UserFactory(username="bob")


@pytest.fixture
def manager(db):
    return UserFactory(username="manager", perms=["ledger_core.post_any_entry"])


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor", perms=["ledger_core.view_any_ledger"])


@pytest.fixture
def client_for():
    return bearer_client


@pytest.fixture
def alice_client(user):
    return bearer_client(user)


@pytest.fixture
def manager_client(manager):
    return bearer_client(manager)


SYSTEM = Actor.system("system:test")


def fund(owner_id: str, amount: int, *, nonce: str | None = None, app: str = "content"):
    """Give ``owner_id`` credits through the real service (a CREDIT_ADD)."""
    import uuid

    return entry_post(
        owner_id=owner_id,
        operation="CREDIT_ADD",
        nonce=nonce or f"fund-{uuid.uuid4().hex}",
        app=app,
        actor=SYSTEM,
        amount=amount,
    ).entry


@pytest.fixture
def funded():
    return fund


@pytest.fixture
def embedded_pgdata(tmp_path):
    """A folder for an embedded PostgreSQL a test starts; stopped afterwards."""
    from ledger_site.embedded import stop

    folder = tmp_path / "pgdata"
    yield folder
    stop(folder)
