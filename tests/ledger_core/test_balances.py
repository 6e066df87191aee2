"""Balances are read from PostgreSQL: read-your-writes under concurrency by
construction, one query per read, and nothing lost when Redis is gone."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings

from ledger_core.actors import Actor
from ledger_core.selectors import balance_get
from ledger_core.services import entry_post
from tests.conftest import bearer_client, fund
from tests.factories import UserFactory
from tests.ledger_core.test_concurrency import run_concurrently
from tests.livehelpers import dead_redis_caches

pytestmark = [pytest.mark.django_db(transaction=True)]

MANAGER = Actor(name="manager", owner_id="manager", can_post_any=True)


def test_balance_read_is_one_query(django_assert_num_queries):
    user = UserFactory(username="alice")
    client = bearer_client(user)
    fund("alice", 9)
    with django_assert_num_queries(1):
        response = client.get("/api/content/ledger/alice/")
    assert response.json()["balance"] == 9


def test_read_your_writes_with_interleaved_posts_and_reads():
    """Once any post has returned version V, no read that starts later sees < V."""
    owner = "shared"
    fund(owner, 1)
    acknowledged = {"balance": 1}
    ack_lock = threading.Lock()
    violations: list[str] = []
    writers, readers, posts_each, reads_each = 4, 6, 15, 60

    def writer(i: int):
        for j in range(posts_each):
            result = entry_post(
                owner_id=owner, operation="CREDIT_ADD", nonce=f"w{i}-{j}", app="content",
                actor=MANAGER, amount=1,
            )  # fmt: skip
            with ack_lock:
                acknowledged["balance"] = max(acknowledged["balance"], result.entry.balance_after)

    def reader(i: int):
        # balance == version here (every entry is +1 starting from one +1 entry)
        for _ in range(reads_each):
            with ack_lock:
                floor = acknowledged["balance"]
            seen = balance_get(owner_id=owner)
            if seen.balance < floor or seen.version != seen.balance:
                violations.append(f"read {seen} after {floor} was acknowledged")

    results = run_concurrently(writers + readers, lambda i: writer(i) if i < writers else reader(i))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert violations == []
    assert balance_get(owner_id=owner).balance == 1 + writers * posts_each


def test_redis_down_reads_and_writes_work():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    with override_settings(CACHES=dead_redis_caches()):
        assert client.get("/api/content/ledger/alice/").json()["balance"] == 5
        response = client.post(
            "/api/content/ledger/",
            {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "during-outage"},
            format="json",
        )
        assert response.status_code == 201 and response.json()["balance_after"] == 4
        assert client.get("/api/content/ledger/alice/").json()["balance"] == 4


def test_reads_inside_a_transaction_see_its_own_posts_only():
    from django.db import transaction

    fund("alice", 5)
    with pytest.raises(RuntimeError), transaction.atomic():
        entry_post(
            owner_id="alice", operation="CREDIT_ADD", nonce="rolled-back", app="content",
            actor=MANAGER, amount=100,
        )  # fmt: skip
        assert balance_get(owner_id="alice").balance == 105  # the caller sees its post
        raise RuntimeError("the caller's transaction fails")
    assert balance_get(owner_id="alice").balance == 5  # nobody else ever does
