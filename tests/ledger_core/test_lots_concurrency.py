"""Expiring credits under real concurrency: real threads, each with its own
PostgreSQL connection, spending while sweepers expire lots."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from ledger_core.models import CreditLot, LedgerEntry
from ledger_core.services import EntryRequest, due_lots_sweep, entry_post, entry_post_batch
from tests.conftest import SYSTEM
from tests.ledger_core.test_concurrency import (
    THREAD_TIMEOUT,
    assert_invariants,
    run_concurrently,
)
from tests.ledger_core.test_lots import MANAGER, assert_lots_add_up

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def lots(owner_id: str, count: int, *, seconds: float, amount: int = 1, tag: str = "") -> None:
    """``count`` lots of ``amount`` for ``owner_id`` expiring in ``seconds``,
    posted in one batch (spread over a few milliseconds of expiry times)."""
    base = timezone.now() + timedelta(seconds=seconds)
    entry_post_batch(app="content", actor=SYSTEM, entries=[
        EntryRequest(owner_id=owner_id, operation="CREDIT_ADD", nonce=f"{owner_id}-lot{tag}-{i}",
                     amount=amount, expires_at=base + timedelta(milliseconds=i % 7))
        for i in range(count)
    ])  # fmt: skip


def test_concurrent_sweepers_post_exactly_one_expiry_per_lot():
    for owner in ("alice", "bob", "carol"):
        lots(owner, 40, seconds=0.5)
    time.sleep(0.7)
    results = run_concurrently(4, lambda i: sum(iter(due_lots_sweep, 0)))
    assert sum(results) == 120, results
    per_lot = Counter(
        LedgerEntry.objects.filter(operation="CREDIT_EXPIRY").values_list(
            "metadata__lot", flat=True
        )
    )
    assert len(per_lot) == 120 and set(per_lot.values()) == {1}
    for owner in ("alice", "bob", "carol"):
        assert_invariants(owner)
        assert_lots_add_up(owner)


def test_spends_racing_the_sweeper_never_take_an_expired_credit_nor_lose_one():
    entry_post(owner_id="alice", operation="CREDIT_ADD", nonce="base", app="content",
               actor=SYSTEM, amount=10)  # fmt: skip
    lots("alice", 30, seconds=0.4)  # expire while the threads run
    lots("alice", 10, seconds=3600, amount=2, tag="long")  # outlive them

    def work(i: int):
        if i < 2:
            deadline = time.monotonic() + 1.5
            swept = 0
            while time.monotonic() < deadline:
                swept += due_lots_sweep()
                time.sleep(0.02)
            return swept
        results = []
        for n in range(6):
            try:
                results.append(
                    entry_post(
                        owner_id="alice",
                        operation="CREDIT_SPEND",
                        nonce=f"s{i}-{n}",
                        app="content",
                        actor=MANAGER,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - collected and asserted on
                results.append(exc)
            time.sleep(0.1)
        return results

    outcomes = run_concurrently(10, work)
    spends = [r for batch in outcomes[2:] for r in batch]
    kinds = Counter(type(r).__name__ for r in spends)
    assert set(kinds) <= {"PostResult", "InsufficientBalance"}, kinds
    due_lots_sweep()
    # Credits only ever went away: once a spend was refused, none was left.
    balance = LedgerEntry.objects.filter(owner_id="alice").order_by("-id").first().balance_after
    if kinds["InsufficientBalance"]:
        assert balance == 0, kinds
    expired = -sum(
        LedgerEntry.objects.filter(operation="CREDIT_EXPIRY").values_list("amount", flat=True)
    )
    assert kinds["PostResult"] == 10 + 30 + 20 - expired - balance, kinds
    # No debit consumed a lot at or after its expiry.
    expiry = dict(CreditLot.objects.values_list("entry", "expires_at"))
    for entry in LedgerEntry.objects.filter(operation="CREDIT_SPEND", consumed__isnull=False):
        for part in entry.consumed:
            assert entry.created_at < expiry[part["entry"]], (entry.pk, part)
    # Every credit is accounted for: consumed, expired, or still there.
    totals = CreditLot.objects.filter(owner_id="alice")
    assert sum(lot.consumed + lot.expired + lot.remaining for lot in totals) == 30 + 20
    assert connection.vendor == "postgresql"
    assert_invariants("alice")
    assert_lots_add_up()


def test_a_spend_waiting_for_the_owner_plans_after_the_write_it_waited_for():
    # A credit expiring sooner than every lot is posted in a transaction that
    # holds the owner's balance row while a spend waits for it: once it
    # commits, the spend must take that credit first (its plan is made under
    # the row lock, after the wait, not from what it saw before).
    now = timezone.now()
    later = entry_post(
        owner_id="alice", operation="CREDIT_ADD", nonce="later", app="content",
        actor=SYSTEM, amount=1, expires_at=now + timedelta(hours=2),
    ).entry  # fmt: skip
    granted, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def grant_sooner() -> None:
        try:
            with transaction.atomic():
                results["sooner"] = entry_post(
                    owner_id="alice", operation="CREDIT_ADD", nonce="sooner", app="content",
                    actor=SYSTEM, amount=1, expires_at=now + timedelta(hours=1),
                ).entry  # fmt: skip
                granted.set()
                release.wait(THREAD_TIMEOUT)
        finally:
            granted.set()
            connections.close_all()

    def spend() -> None:
        try:
            results["spend"] = entry_post(
                owner_id="alice", operation="CREDIT_SPEND", nonce="spend", app="content",
                actor=MANAGER,
            ).entry  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - asserted on below
            results["spend"] = exc
        finally:
            connections.close_all()

    granter = threading.Thread(target=grant_sooner)
    spender = threading.Thread(target=spend)
    granter.start()
    try:
        assert granted.wait(THREAD_TIMEOUT)
        spender.start()
        # The spend waits for the row the uncommitted grant holds.
        deadline = time.monotonic() + THREAD_TIMEOUT
        while not waiting_for_a_lock() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiting_for_a_lock(), "the spend never waited for the grant's row"
    finally:
        release.set()
        for thread in (granter, spender):
            if thread.is_alive():
                thread.join(THREAD_TIMEOUT)
            assert not thread.is_alive()
    spent = results["spend"]
    assert isinstance(spent, LedgerEntry), spent
    assert spent.consumed == [{"entry": results["sooner"].pk, "amount": 1}]
    assert CreditLot.objects.get(entry=later.pk).remaining == 1
    assert_invariants("alice")
    assert_lots_add_up()


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
