"""Posting under real concurrency: real threads, real PostgreSQL connections.

Each thread has its own PostgreSQL connection and closes it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection, connections
from django.db.models import Sum

from ledger_core import chain
from ledger_core.actors import Actor
from ledger_core.exceptions import InsufficientBalance, LedgerError, NonceInFlight
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import entry_post
from tests.conftest import SYSTEM, fund

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

THREAD_TIMEOUT = 60


def run_concurrently(n: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``n`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=THREAD_TIMEOUT)
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
        assert not thread.is_alive(), "a posting thread hung"
    return results


def assert_invariants(owner_id: str) -> None:
    entries = LedgerEntry.objects.filter(owner_id=owner_id)
    total = entries.aggregate(s=Sum("amount"))["s"] or 0
    balance = Balance.objects.get(owner_id=owner_id)
    assert balance.balance == total
    assert balance.balance >= 0
    assert balance.version == entries.count()
    assert entries.order_by("-id").first().balance_after == balance.balance
    # The balance_after chain is gap-free: each entry continues from the previous one.
    running = 0
    for amount, after in entries.order_by("id").values_list("amount", "balance_after"):
        running += amount
        assert after == running
    # The hash chain is linear: each entry links to the one applied before it.
    head = chain.GENESIS
    for number, entry in enumerate(entries.order_by("seq"), start=1):
        assert (entry.seq, entry.prev_hash) == (number, head), entry.pk
        assert entry.hash == chain.hash_of(entry, head), entry.pk
        head = entry.hash
    assert balance.head_hash == head


def test_racing_spends_never_overdraw():
    assert connection.vendor == "postgresql"
    fund("alice", 10)
    alice = Actor(name="alice", owner_id="alice")

    def spend(i: int):
        return entry_post(
            owner_id="alice", operation="CREDIT_SPEND", nonce=f"s{i}", app="content", actor=alice
        )

    results = run_concurrently(24, spend)
    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == {"PostResult": 10, "InsufficientBalance": 14}, outcomes
    assert Balance.objects.get(owner_id="alice").balance == 0
    assert_invariants("alice")


def test_concurrent_same_nonce_creates_one_entry():
    fund("alice", 100)
    manager = Actor(name="manager", owner_id="manager", can_post_any=True)

    def grant(i: int):
        return entry_post(
            owner_id="alice",
            operation="CREDIT_SPEND",
            nonce="same",
            app="content",
            actor=manager,
            amount=-7,
        )

    results = run_concurrently(16, grant)
    errors = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, NonceInFlight) for e in errors), errors
    created = [r for r in results if not isinstance(r, Exception) and not r.replayed]
    replays = [r for r in results if not isinstance(r, Exception) and r.replayed]
    assert len(created) == 1
    assert all(r.entry.pk == created[0].entry.pk for r in replays)
    assert LedgerEntry.objects.filter(owner_id="alice", nonce="same").count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 93
    assert_invariants("alice")


def test_concurrent_first_posts_for_new_owner_all_succeed():
    manager = Actor(name="manager", owner_id="manager", can_post_any=True)

    def grant(i: int):
        return entry_post(
            owner_id="newcomer",
            operation="CREDIT_ADD",
            nonce=f"g{i}",
            app="rewards",
            actor=manager,
            amount=i + 1,
        )

    n = 16
    results = run_concurrently(n, grant)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Balance.objects.get(owner_id="newcomer").balance == n * (n + 1) // 2
    assert_invariants("newcomer")


def test_mixed_credits_and_debits_on_many_owners_keep_invariants():
    owners = [f"owner{i}" for i in range(4)]
    for owner in owners:
        fund(owner, 3)
    manager = Actor(name="manager", owner_id="manager", can_post_any=True)

    def work(i: int):
        owner = owners[i % len(owners)]
        out = []
        for j in range(8):
            credit = (i + j) % 3 == 0
            try:
                out.append(
                    entry_post(
                        owner_id=owner,
                        operation="CREDIT_ADD" if credit else "CREDIT_SPEND",
                        nonce=f"t{i}-{j}",
                        app="content",
                        actor=manager,
                        amount=2 if credit else -1,
                    )
                )
            except InsufficientBalance:
                out.append("refused")
        return out

    results = run_concurrently(12, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    for owner in owners:
        assert_invariants(owner)


def test_concurrent_daily_claims_give_exactly_one_success():
    alice = Actor(name="alice", owner_id="alice")

    def claim(i: int):
        return entry_post(
            owner_id="alice", operation="DAILY_REWARD", nonce=f"d{i}", app="rewards", actor=alice
        )

    results = run_concurrently(12, claim)
    successes = [r for r in results if not isinstance(r, Exception)]
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(successes) == 1
    assert all(isinstance(f, LedgerError) and f.code == "limit_reached" for f in failures)
    assert Balance.objects.get(owner_id="alice").balance == 1
    assert_invariants("alice")


def test_posts_batches_holds_and_expiries_racing_keep_one_linear_chain():
    import time
    from datetime import timedelta

    from django.utils import timezone

    from ledger_core.services import (
        EntryRequest,
        due_lots_sweep,
        entry_post_batch,
        hold_capture,
        hold_place,
    )

    manager = Actor(name="manager", can_post_any=True, can_view_any=True)
    fund("alice", 40)
    soon = timezone.now() + timedelta(seconds=0.3)
    for i in range(6):
        entry_post(owner_id="alice", operation="CREDIT_ADD", nonce=f"lot{i}", app="content",
                   actor=SYSTEM, amount=10, expires_at=soon)  # fmt: skip

    def work(i: int):
        kind = i % 4
        for n in range(4):
            if kind == 0:
                entry_post(owner_id="alice", operation="CREDIT_SPEND", nonce=f"s{i}-{n}",
                           app="content", actor=manager)  # fmt: skip
            elif kind == 1:
                entry_post_batch(app="content", actor=SYSTEM, entries=[
                    EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce=f"b{i}-{n}-{k}",
                                 amount=1)
                    for k in range(3)
                ])  # fmt: skip
            elif kind == 2:
                hold = hold_place(
                    owner_id="alice",
                    operation="CREDIT_SPEND",
                    nonce=f"h{i}-{n}",
                    app="content",
                    actor=manager,
                ).hold
                hold_capture(hold_id=hold.pk, app="content", actor=manager)  # fmt: skip
            else:
                due_lots_sweep()
            time.sleep(0.1)
        return i

    results = run_concurrently(8, work)
    assert results == list(range(8)), results
    due_lots_sweep()
    assert LedgerEntry.objects.filter(operation="CREDIT_EXPIRY").exists()
    assert_invariants("alice")
