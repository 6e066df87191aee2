"""entry_post_batch: atomic and independent batches, replays, limits, and
concurrent batches over the same owners (no deadlock, invariants hold)."""

from __future__ import annotations

import pytest

from ledger_core.actors import Actor
from ledger_core.exceptions import BatchRefused, Forbidden
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import EntryRequest, entry_post, entry_post_batch
from tests.conftest import fund
from tests.ledger_core.test_concurrency import assert_invariants, run_concurrently

MANAGER = Actor(name="manager", owner_id="manager", can_post_any=True)
ALICE = Actor(name="alice", owner_id="alice")


def req(owner, operation="CREDIT_ADD", nonce="n", amount=None, **kw):
    return EntryRequest(owner_id=owner, operation=operation, nonce=nonce, amount=amount, **kw)


@pytest.mark.django_db
def test_atomic_batch_posts_all_in_order():
    results = entry_post_batch(
        app="content",
        actor=MANAGER,
        entries=[
            req("alice", amount=10, nonce="a1"),
            req("bob", amount=5, nonce="b1"),
            req("alice", "CREDIT_SPEND", nonce="a2", amount=-4),
            req("alice", "CONTENT_ACCESS", nonce="a3"),
        ],
    )
    assert [r.status for r in results] == [201, 201, 201, 201]
    assert [r.entry.balance_after for r in results] == [10, 5, 6, 6]
    assert all(r.entry.pk for r in results)
    assert Balance.objects.get(owner_id="alice").balance == 6
    assert Balance.objects.get(owner_id="alice").version == 3
    for owner in ("alice", "bob"):
        assert_invariants(owner)
    stored = LedgerEntry.objects.get(pk=results[2].entry.pk)
    assert (stored.nonce, stored.amount, stored.created_by) == ("a2", -4, "manager")


@pytest.mark.django_db
def test_atomic_batch_stores_nothing_when_one_entry_fails():
    fund("alice", 3)
    with pytest.raises(BatchRefused) as info:
        entry_post_batch(
            app="content",
            actor=MANAGER,
            entries=[
                req("bob", amount=5, nonce="b1"),
                req("alice", "CREDIT_SPEND", nonce="a1", amount=-2),
                req("alice", "CREDIT_SPEND", nonce="a2", amount=-2),
            ],
        )
    assert info.value.index == 2
    assert info.value.code == "insufficient_balance"
    assert info.value.extra["balance"] == 1 and info.value.extra["required"] == 2
    assert not Balance.objects.filter(owner_id="bob").exists()
    assert Balance.objects.get(owner_id="alice").balance == 3
    assert LedgerEntry.objects.count() == 1


@pytest.mark.django_db
def test_atomic_batch_invalid_item_reports_index():
    with pytest.raises(BatchRefused) as info:
        entry_post_batch(
            app="content",
            actor=MANAGER,
            entries=[req("alice", amount=5, nonce="ok"), req("bad owner", amount=5, nonce="x")],
        )
    assert (info.value.index, info.value.code, info.value.status) == (1, "invalid", 400)
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_non_atomic_batch_reports_each_result():
    fund("alice", 1)
    results = entry_post_batch(
        app="content",
        actor=MANAGER,
        atomic=False,
        entries=[
            req("alice", "CREDIT_SPEND", nonce="s1", amount=-1),
            req("alice", "CREDIT_SPEND", nonce="s2", amount=-1),
            req("bob", amount=7, nonce="g1"),
            req("bob", "NOPE", nonce="g2"),
            req("bob", amount=0, nonce="g3"),
        ],
    )
    assert [r.status for r in results] == [201, 409, 201, 400, 400]
    assert results[1].error.code == "insufficient_balance"
    assert Balance.objects.get(owner_id="bob").balance == 7
    assert Balance.objects.get(owner_id="alice").balance == 0
    assert_invariants("alice")
    assert_invariants("bob")


@pytest.mark.django_db
def test_batch_replays_previous_posts_and_in_batch_duplicates():
    first = entry_post(
        owner_id="alice", operation="CREDIT_ADD", nonce="g", app="content", actor=MANAGER, amount=3
    )
    results = entry_post_batch(
        app="content",
        actor=MANAGER,
        atomic=False,
        entries=[
            req("alice", amount=3, nonce="g"),  # replay of an earlier post
            req("alice", amount=4, nonce="g"),  # same nonce, other payload
            req("bob", amount=2, nonce="x"),
            req("bob", amount=2, nonce="x"),  # repeated in the batch: replay
            req("bob", amount=9, nonce="x"),  # repeated with another payload
        ],
    )
    assert [r.status for r in results] == [200, 409, 201, 200, 409]
    assert results[0].entry.pk == first.entry.pk
    assert results[3].entry.pk == results[2].entry.pk
    assert Balance.objects.get(owner_id="bob").balance == 2
    assert Balance.objects.get(owner_id="alice").balance == 3


@pytest.mark.django_db
def test_batch_applies_limits_and_permissions():
    results = entry_post_batch(
        app="content",
        actor=ALICE,
        atomic=False,
        entries=[
            req("alice", "DAILY_REWARD", nonce="d1"),
            req("alice", "DAILY_REWARD", nonce="d2"),
            req("alice", "CREDIT_ADD", nonce="mint", amount=5),
            req("bob", "CREDIT_SPEND", nonce="steal"),
        ],
    )
    assert [r.status for r in results] == [201, 409, 403, 403]
    assert results[1].error.code == "limit_reached"
    assert isinstance(results[2].error, Forbidden)


@pytest.mark.django_db
def test_direct_batch_refuses_domain_only_operations():
    with pytest.raises(BatchRefused) as info:
        entry_post_batch(
            app="rewards",
            actor=MANAGER,
            direct=True,
            entries=[req("alice", "REFERRAL_BONUS", nonce="r")],
        )
    assert info.value.code == "invalid"


@pytest.mark.django_db
def test_empty_batch():
    assert entry_post_batch(app="content", actor=MANAGER, entries=[]) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_concurrent_batches_over_same_owners_do_not_deadlock():
    owners = [f"o{i}" for i in range(20)]
    for owner in owners:
        fund(owner, 50)

    def batch(i: int):
        order = owners if i % 2 == 0 else list(reversed(owners))
        entries = [
            req(
                o,
                "CREDIT_SPEND" if (i + k) % 2 else "CREDIT_ADD",
                nonce=f"b{i}-{o}",
                amount=-1 if (i + k) % 2 else 2,
            )
            for k, o in enumerate(order)
        ]
        return entry_post_batch(app="content", actor=MANAGER, entries=entries)

    results = run_concurrently(8, batch)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    for owner in owners:
        assert_invariants(owner)
    assert LedgerEntry.objects.filter(nonce__startswith="b").count() == 8 * 20


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_batches_and_single_posts_race_without_overdraft():
    fund("alice", 10)

    def work(i: int):
        if i % 2:
            return entry_post_batch(
                app="content",
                actor=MANAGER,
                atomic=False,
                entries=[
                    req("alice", "CREDIT_SPEND", nonce=f"b{i}-{k}", amount=-1) for k in range(3)
                ],
            )
        return entry_post(
            owner_id="alice", operation="CREDIT_SPEND", nonce=f"s{i}", app="content", actor=ALICE
        )

    results = run_concurrently(8, work)
    assert not [r for r in results if isinstance(r, Exception) and r.code != "insufficient_balance"]
    assert Balance.objects.get(owner_id="alice").balance == 0
    assert_invariants("alice")
