"""Concurrent item creation with one nonce: one item, one payment."""

from __future__ import annotations

import pytest

from content_app.models import ContentItem
from content_app.services import item_create
from ledger_core.actors import Actor
from ledger_core.models import Balance, LedgerEntry
from tests.conftest import fund
from tests.factories import UserFactory
from tests.ledger_core.test_concurrency import run_concurrently

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_concurrent_creates_with_same_nonce_pay_once():
    user = UserFactory(username="alice")
    fund("alice", 50)
    actor = Actor.for_user(user)

    results = run_concurrently(
        10, lambda i: item_create(owner=user, title="t", body="b", actor=actor, nonce="same")
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert ContentItem.objects.count() == 1
    assert sum(not r.replayed for r in results) == 1
    assert LedgerEntry.objects.filter(operation="CONTENT_CREATION").count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 45


def test_concurrent_creates_never_overdraw():
    user = UserFactory(username="alice")
    fund("alice", 12)
    actor = Actor.for_user(user)

    results = run_concurrently(
        8, lambda i: item_create(owner=user, title=f"t{i}", body="b", actor=actor, nonce=f"n{i}")
    )
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert ContentItem.objects.count() == 2
    assert Balance.objects.get(owner_id="alice").balance == 2
