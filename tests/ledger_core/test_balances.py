"""Balances are read from PostgreSQL: read-your-writes under concurrency by
construction, one query per read, and nothing lost when Redis is gone."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from ledger_core.actors import Actor
from ledger_core.selectors import balance_get
from ledger_core.services import entry_post, hold_place
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


def test_balance_at_an_instant():
    from datetime import timedelta

    from django.utils import timezone

    from ledger_core.models import LedgerEntry

    alice = UserFactory(username="alice")
    client = bearer_client(alice)
    before = timezone.now()
    fund("alice", 5, nonce="a")
    fund("alice", 2, nonce="b")
    first, second = LedgerEntry.objects.filter(owner_id="alice").order_by("id")
    assert (first.seq, second.seq) == (1, 2) and first.created_at < second.created_at

    def at(instant):
        return client.get("/api/content/ledger/alice/", {"at": instant.isoformat()})

    assert at(before).json() == {
        "owner_id": "alice", "at": before.isoformat().replace("+00:00", "Z"),
        "balance": 0, "version": 0,
    }  # fmt: skip
    assert at(first.created_at).json()["balance"] == 5
    assert at(first.created_at).json()["version"] == 1
    assert at(second.created_at - timedelta(microseconds=1)).json()["balance"] == 5
    assert at(second.created_at).json()["balance"] == 7
    for bad in ("yesterday", "2026-13-01T00:00:00Z"):
        response = client.get("/api/content/ledger/alice/", {"at": bad})
        assert response.status_code == 400 and response.json()["code"] == "invalid"
    response = at(timezone.now() + timedelta(minutes=1))
    assert response.status_code == 400 and "future" in response.json()["detail"]
    # Another owner's past balance is as private as their present one.
    assert (
        bearer_client(UserFactory(username="bob"))
        .get("/api/content/ledger/alice/", {"at": before.isoformat()})
        .status_code
        == 403
    )


def test_entries_are_numbered_and_timed_in_the_order_they_were_applied():
    """Racing posts to one owner: seq runs 1..n in id order, and created_at
    never goes backwards in that order (the database clock, taken under the
    balance row's lock)."""
    from ledger_core.models import LedgerEntry
    from ledger_core.services import EntryRequest, entry_post_batch

    fund("shared", 1)

    def work(i: int):
        for j in range(10):
            if j % 3 == 0:
                entry_post_batch(app="content", actor=MANAGER, entries=[
                    EntryRequest(owner_id="shared", operation="CREDIT_ADD", nonce=f"b{i}-{j}-{k}",
                                 amount=1) for k in range(3)])  # fmt: skip
            else:
                entry_post(owner_id="shared", operation="CREDIT_ADD", nonce=f"s{i}-{j}",
                           app="content", actor=MANAGER, amount=1)  # fmt: skip

    results = run_concurrently(6, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    rows = list(
        LedgerEntry.objects.filter(owner_id="shared")
        .order_by("id")
        .values_list("seq", "created_at", "balance_after")
    )
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    times = [created for _, created, _ in rows]
    assert times == sorted(times)
    assert [b for _, _, b in rows] == list(range(1, len(rows) + 1))


def test_many_balances_in_one_request_answer_as_single_reads(django_assert_num_queries):
    """An owner with a hold and an expiring lot, a plain one and an unknown
    one: each answered exactly as its own balance read answers it, in the
    order asked, repeated ids once; one statement for all of them."""
    manager = bearer_client(UserFactory(username="boss", perms=["ledger_core.post_any_entry"]))
    fund("alice", 9)
    entry_post(owner_id="alice", operation="CREDIT_ADD", nonce="lot", app="content",
               actor=MANAGER, amount=4, expires_at=timezone.now() + timedelta(days=3))  # fmt: skip
    hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce="h", app="content",
               actor=MANAGER, amount=-2)  # fmt: skip
    fund("bob", 3)
    asked = ["bob", "nobody-yet", "alice", "bob"]
    with django_assert_num_queries(2):  # the user, then the balances
        response = manager.post("/api/content/ledger/balances/", {"owner_ids": asked},
                                format="json")  # fmt: skip
    assert response.status_code == 200, response.content
    balances = response.json()["balances"]
    assert [b["owner_id"] for b in balances] == ["bob", "nobody-yet", "alice"]
    for answer in balances:
        single = manager.get(f"/api/content/ledger/{answer['owner_id']}/").json()
        assert answer == single
    alice = balances[2]
    assert (alice["balance"], alice["held"], alice["available"]) == (13, 2, 11)
    assert alice["expiring"][0]["amount"] == 2  # the hold reserved 2 of the lot's 4
    assert balances[1]["balance"] == 0 and balances[1]["version"] == 0


def test_many_balances_only_of_owners_you_may_read():
    alice = bearer_client(UserFactory(username="alice"))
    auditor = bearer_client(UserFactory(username="eve", perms=["ledger_core.view_any_ledger"]))
    fund("alice", 2)
    fund("bob", 5)
    url = "/api/rewards/ledger/balances/"
    own = alice.post(url, {"owner_ids": ["alice"]}, format="json")
    assert own.status_code == 200 and own.json()["balances"][0]["balance"] == 2
    refused = alice.post(url, {"owner_ids": ["alice", "bob"]}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert b'"balance"' not in refused.content
    seen = auditor.post(url, {"owner_ids": ["alice", "bob"]}, format="json").json()
    assert [b["balance"] for b in seen["balances"]] == [2, 5]
    assert APIClient().post(url, {"owner_ids": ["alice"]}, format="json").status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"owner_ids": []}, {"owner_ids": "alice"}, {"owner_ids": ["not an owner!"]},
     {"owner_ids": ["alice", ".."]}, {"owner_ids": [7]}, {"owner_ids": ["x" * 129]},
     {"owner_ids": ["a"] * 1001}],
)  # fmt: skip
def test_many_balances_refuse_bad_lists(body):
    manager = bearer_client(UserFactory(username="boss", perms=["ledger_core.post_any_entry"]))
    response = manager.post("/api/content/ledger/balances/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "owner_ids" in response.json()["errors"]


def test_the_owner_named_balances_keeps_its_balance_url():
    fund("balances", 6)
    manager = bearer_client(UserFactory(username="boss", perms=["ledger_core.post_any_entry"]))
    response = manager.get("/api/content/ledger/balances/")
    assert response.status_code == 200 and response.json()["balance"] == 6
    entries = manager.get("/api/content/ledger/balances/entries/")
    assert entries.status_code == 200 and len(entries.json()["results"]) == 1
