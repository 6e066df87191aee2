"""Holds under real concurrency: real threads, each with its own PostgreSQL
connection. Holds, spends, captures, voids and expiry sweeps race; afterwards
every invariant holds: held <= balance, available >= 0, held is exactly what
pending holds reserve, a hold resolves at most once, and N requests against
``available`` succeed exactly as far as it goes."""

from __future__ import annotations

from collections import Counter

import pytest

from ledger_core.actors import Actor
from ledger_core.models import HoldStatus, LedgerEntry, LedgerHold
from ledger_core.services import (
    due_holds_sweep,
    entry_post,
    hold_capture,
    hold_place,
    hold_void,
)
from tests.conftest import fund
from tests.ledger_core.test_concurrency import assert_invariants, run_concurrently
from tests.ledger_core.test_holds import assert_hold_invariants, expire

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)


def place(i: int, amount: int = -1, owner_id: str = "alice"):
    return hold_place(
        owner_id=owner_id, operation="CREDIT_SPEND", nonce=f"h{i}", app="content",
        actor=MANAGER, amount=amount,
    )  # fmt: skip


def spend(i: int):
    return entry_post(
        owner_id="alice", operation="CREDIT_SPEND", nonce=f"s{i}", app="content", actor=MANAGER
    )


def names(results) -> Counter:
    return Counter(type(r).__name__ for r in results)


def test_racing_holds_reserve_exactly_what_is_available():
    fund("alice", 7)
    outcomes = names(run_concurrently(16, place))
    assert outcomes == {"HoldResult": 7, "InsufficientBalance": 9}, outcomes
    assert LedgerHold.objects.filter(status=HoldStatus.PENDING).count() == 7
    assert_hold_invariants()


def test_holds_and_spends_racing_share_available():
    fund("alice", 10)
    results = run_concurrently(24, lambda i: place(i) if i % 2 else spend(i))
    outcomes = names(results)
    assert outcomes["HoldResult"] + outcomes["PostResult"] == 10, outcomes
    assert outcomes["InsufficientBalance"] == 14, outcomes
    assert_invariants("alice")
    assert_hold_invariants()


def test_captures_voids_and_spends_racing_resolve_each_hold_once():
    fund("alice", 12)
    holds = [place(i, amount=-2).hold.pk for i in range(4)]  # 8 held, 4 free

    def work(i: int):
        target = holds[i % 4]
        kind = (i // 4) % 3
        if kind == 0:
            return hold_capture(hold_id=target, app="content", actor=MANAGER)
        if kind == 1:
            return hold_void(hold_id=target, app="content", actor=MANAGER)
        return spend(100 + i)

    results = run_concurrently(24, work)
    for pk in holds:
        hold = LedgerHold.objects.get(pk=pk)
        entries = LedgerEntry.objects.filter(hold=pk)
        assert hold.status in (HoldStatus.CAPTURED, HoldStatus.VOIDED)
        assert entries.count() == (1 if hold.status == HoldStatus.CAPTURED else 0)
        if hold.status == HoldStatus.CAPTURED:
            assert hold.entry == entries.get().pk
    outcomes = names(results)
    assert outcomes["InsufficientBalance"] + outcomes["PostResult"] == 8, outcomes
    # No spend took credits a hold still reserved: spends that succeeded fit
    # in what was free when they ran, and the totals still add up.
    assert_invariants("alice")
    assert_hold_invariants()


def test_concurrent_captures_post_one_entry():
    fund("alice", 5)
    target = place(0, amount=-5).hold.pk
    results = run_concurrently(
        8, lambda i: hold_capture(hold_id=target, app="content", actor=MANAGER)
    )
    assert names(results) == {"CaptureResult": 8}, results
    assert sum(not r.replayed for r in results) == 1
    assert len({r.entry.pk for r in results}) == 1
    assert LedgerEntry.objects.filter(hold=target).count() == 1
    assert_invariants("alice")
    assert_hold_invariants()


def test_sweepers_and_spends_racing_release_each_expired_hold_once():
    for owner in ("alice", "bob"):
        fund(owner, 20)
    expired = [place(i, amount=-2, owner_id=("alice", "bob")[i % 2]).hold.pk for i in range(16)]
    for pk in expired:
        expire(pk)
    kept = place(99, amount=-2).hold.pk  # alice: 2 of 20 stay held

    def work(i: int):
        if i < 4:
            return sum(iter(due_holds_sweep, 0))
        return spend(i)

    results = run_concurrently(24, work)
    outcomes = names(results)
    # 20 spends of 1 against alice's 18 available credits.
    assert outcomes["PostResult"] == 18 and outcomes["InsufficientBalance"] == 2, outcomes
    statuses = Counter(LedgerHold.objects.filter(pk__in=expired).values_list("status", flat=True))
    assert statuses == {HoldStatus.EXPIRED: 16}
    assert LedgerHold.objects.get(pk=kept).status == HoldStatus.PENDING
    for owner in ("alice", "bob"):
        assert_invariants(owner)
        assert_hold_invariants(owner)
