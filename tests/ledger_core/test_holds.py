"""Holds through the services: reserve, capture, void, expire, and how every
debit respects what holds reserve. Real PostgreSQL."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command
from django.db.models import Sum
from prometheus_client import REGISTRY

from ledger_core.actors import Actor
from ledger_core.exceptions import (
    BatchRefused,
    Forbidden,
    HoldExpired,
    HoldNotFound,
    HoldNotPending,
    InsufficientBalance,
    InvalidEntry,
    NonceConflict,
    UnknownOperation,
)
from ledger_core.models import Balance, HoldEvent, HoldStatus, LedgerEntry, LedgerHold
from ledger_core.selectors import balance_get, hold_get, hold_list
from ledger_core.services import (
    EntryRequest,
    due_holds_sweep,
    entry_post,
    entry_post_batch,
    entry_reverse,
    hold_capture,
    hold_place,
    hold_void,
)
from ledger_core.services.holds import HOLD_FIELDS, hold_data
from tests.conftest import SYSTEM, fund

pytestmark = pytest.mark.django_db

ALICE = Actor(name="alice", owner_id="alice")
BOB = Actor(name="bob", owner_id="bob")
MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)


def hold(amount=-3, nonce="h1", owner_id="alice", actor=MANAGER, app="content", **kwargs):
    return hold_place(
        owner_id=owner_id, operation="CREDIT_SPEND", nonce=nonce, app=app, actor=actor,
        amount=amount, **kwargs,
    )  # fmt: skip


def spend(amount=-1, nonce="s1", owner_id="alice"):
    return entry_post(
        owner_id=owner_id, operation="CREDIT_SPEND", nonce=nonce, app="content", actor=MANAGER,
        amount=amount,
    )  # fmt: skip


def expire(hold_id: int) -> None:
    """Move a pending hold's expiry into the past (as time passing would)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ledger_core_ledgerhold SET expires_at = clock_timestamp() - interval '1 second'"
            " WHERE id = %s",
            [hold_id],
        )


def assert_hold_invariants(owner_id: str = "alice") -> None:
    """held is what the pending holds reserve, never more than the balance;
    the balance is the sum of the entries."""
    row = Balance.objects.get(owner_id=owner_id)
    pending = LedgerHold.objects.filter(owner_id=owner_id, status=HoldStatus.PENDING)
    assert row.held == -(pending.aggregate(s=Sum("amount"))["s"] or 0)
    assert 0 <= row.held <= row.balance
    assert (
        row.balance == LedgerEntry.objects.filter(owner_id=owner_id).aggregate(s=Sum("amount"))["s"]
    )


def holds_counted(app: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("ledger_holds_total", {"app": app, "outcome": outcome})
    return value or 0.0


# --- placing ---------------------------------------------------------------


def test_hold_reserves_credits_without_an_entry():
    fund("alice", 5)
    result = hold(amount=-3)
    assert not result.replayed and result.hold.pk
    assert result.hold.status == HoldStatus.PENDING and result.hold.amount == -3
    assert result.hold.expires_at > result.hold.created_at
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (5, 3, 2)
    assert LedgerEntry.objects.filter(owner_id="alice").count() == 1
    assert_hold_invariants()


def test_default_and_bounded_expiry():
    fund("alice", 5)
    placed = hold(amount=-1).hold
    assert (placed.expires_at - placed.created_at).total_seconds() == 900
    week = hold(amount=-1, nonce="h2", expires_in=604800).hold
    assert (week.expires_at - week.created_at).total_seconds() == 604800
    for bad in (0, 604801, True, "60", 1.5):
        with pytest.raises(InvalidEntry) as info:
            hold(amount=-1, nonce="h3", expires_in=bad)
        assert info.value.extra["field"] == "expires_in"
    assert LedgerHold.objects.count() == 2


def test_hold_beyond_available_is_refused_and_stores_nothing():
    fund("alice", 5)
    hold(amount=-4)
    with pytest.raises(InsufficientBalance) as info:
        hold(amount=-2, nonce="h2")
    assert info.value.extra == {"balance": 5, "available": 1, "required": 2}
    assert LedgerHold.objects.count() == 1
    with pytest.raises(InsufficientBalance):
        hold(owner_id="nobody", amount=-1)
    assert not Balance.objects.filter(owner_id="nobody").exists()


def test_hold_replay_conflict_and_own_nonce_namespace():
    fund("alice", 5)
    first = hold(amount=-2)
    again = hold(amount=-2)
    assert again.replayed and again.hold.pk == first.hold.pk
    with pytest.raises(NonceConflict) as info:
        hold(amount=-1)
    assert info.value.extra["hold_id"] == first.hold.pk
    with pytest.raises(NonceConflict):
        hold(amount=-2, expires_in=60)
    # Entries have their own nonces: the same nonce posts fine.
    assert not spend(nonce="h1").replayed
    assert LedgerHold.objects.count() == 1


def test_only_debits_without_a_limit_can_be_held():
    fund("alice", 5)
    with pytest.raises(UnknownOperation) as info:
        hold_place(owner_id="alice", operation="CREDIT_ADD", nonce="x", app="content",
                   actor=MANAGER, amount=5)  # fmt: skip
    assert info.value.extra["allowed"] == ["CREDIT_SPEND", "CONTENT_CREATION"]
    with pytest.raises(InvalidEntry):
        hold(amount=3)  # a debit's amount is negative
    assert not LedgerHold.objects.exists()


def test_who_may_hold_capture_and_void():
    fund("alice", 5)
    fund("bob", 5)
    # Owners hold their own debits at the configured amount; managers any size.
    own = hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce="o", app="content",
                     actor=ALICE).hold  # fmt: skip
    assert own.amount == -1
    with pytest.raises(InvalidEntry):
        hold(amount=-2, nonce="o2", actor=ALICE)
    with pytest.raises(Forbidden):
        hold(amount=None, nonce="o3", owner_id="alice", actor=BOB)
    with pytest.raises(Forbidden):
        hold_capture(hold_id=own.pk, app="content", actor=BOB)
    with pytest.raises(Forbidden):
        hold_void(hold_id=own.pk, app="content", actor=BOB)
    auditor = Actor(name="auditor", can_view_any=True)
    with pytest.raises(Forbidden):
        hold_void(hold_id=own.pk, app="content", actor=auditor)
    assert hold_capture(hold_id=own.pk, app="content", actor=ALICE).entry.amount == -1
    assert_hold_invariants()


def test_holds_belong_to_their_app():
    fund("alice", 5)
    placed = hold().hold
    with pytest.raises(HoldNotFound):
        hold_capture(hold_id=placed.pk, app="rewards", actor=MANAGER)
    with pytest.raises(HoldNotFound):
        hold_void(hold_id=placed.pk, app="rewards", actor=MANAGER)
    assert hold_get(hold_id=placed.pk, app="rewards") is None
    with pytest.raises(HoldNotFound):
        hold_void(hold_id=0, app="content", actor=MANAGER)


# --- debits respect available ---------------------------------------------


def test_spends_batches_and_reversals_leave_held_credits_alone():
    grant = fund("alice", 5)
    hold(amount=-3)
    with pytest.raises(InsufficientBalance) as info:
        spend(amount=-3)
    assert info.value.extra == {"balance": 5, "available": 2, "required": 3}
    with pytest.raises(BatchRefused) as refused:
        entry_post_batch(app="content", actor=MANAGER, entries=[
            EntryRequest(owner_id="alice", operation="CREDIT_SPEND", nonce="b1", amount=-3),
        ])  # fmt: skip
    assert refused.value.code == "insufficient_balance"
    # Reversing the grant would take credits a hold reserves.
    with pytest.raises(InsufficientBalance):
        entry_reverse(entry_id=grant.pk, app="content", actor=MANAGER, nonce="r", reason="x")
    assert spend(amount=-2).entry.balance_after == 3
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (3, 3, 0)
    assert_hold_invariants()


# --- capture ---------------------------------------------------------------


def test_capture_posts_one_entry_and_releases_the_hold(django_capture_on_commit_callbacks):
    fund("alice", 5)
    placed = hold(amount=-3).hold
    before = holds_counted("content", "captured")
    with django_capture_on_commit_callbacks(execute=True):
        result = hold_capture(hold_id=placed.pk, app="content", actor=MANAGER)
    entry = result.entry
    assert not result.replayed
    assert (entry.amount, entry.balance_after, entry.operation, entry.hold) == (
        -3, 2, "CREDIT_SPEND", placed.pk,
    )  # fmt: skip
    assert result.hold.status == HoldStatus.CAPTURED and result.hold.entry == entry.pk
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (2, 0, 2)
    assert holds_counted("content", "captured") == before + 1
    again = hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=-3)
    assert again.replayed and again.entry.pk == entry.pk
    with pytest.raises(HoldNotPending) as info:
        hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=-2)
    assert info.value.extra == {"status": "captured"}
    with pytest.raises(HoldNotPending):
        hold_void(hold_id=placed.pk, app="content", actor=MANAGER)
    assert LedgerEntry.objects.filter(hold=placed.pk).count() == 1
    assert_hold_invariants()


def test_partial_capture_releases_the_rest():
    fund("alice", 5)
    placed = hold(amount=-3).hold
    entry = hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=-2).entry
    assert entry.amount == -2
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (3, 0, 3)
    assert_hold_invariants()


@pytest.mark.parametrize("amount", [-4, 0, 1, True, "-1"])
def test_capture_amount_must_fit_the_hold(amount):
    fund("alice", 5)
    placed = hold(amount=-3).hold
    with pytest.raises(InvalidEntry):
        hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=amount)
    assert LedgerHold.objects.get(pk=placed.pk).status == HoldStatus.PENDING
    assert_hold_invariants()


# --- void ------------------------------------------------------------------


def test_void_releases_once():
    fund("alice", 5)
    placed = hold(amount=-3).hold
    result = hold_void(hold_id=placed.pk, app="content", actor=MANAGER)
    assert not result.replayed and result.hold.status == HoldStatus.VOIDED
    assert balance_get(owner_id="alice").available == 5
    assert hold_void(hold_id=placed.pk, app="content", actor=MANAGER).replayed
    with pytest.raises(HoldNotPending) as info:
        hold_capture(hold_id=placed.pk, app="content", actor=MANAGER)
    assert info.value.extra == {"status": "voided"}
    assert LedgerEntry.objects.filter(owner_id="alice").count() == 1
    assert_hold_invariants()


# --- expiry ----------------------------------------------------------------


def test_an_expired_hold_stops_counting_without_any_job():
    fund("alice", 5)
    placed = hold(amount=-4).hold
    expire(placed.pk)
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (5, 0, 5)
    assert hold_get(hold_id=placed.pk, app="content").current_status == "expired"
    assert [h.current_status for h in hold_list(owner_id="alice", status="expired")] == ["expired"]
    assert not hold_list(owner_id="alice", status="pending").exists()
    with pytest.raises(HoldExpired) as info:
        hold_capture(hold_id=placed.pk, app="content", actor=MANAGER)
    assert info.value.extra == {"status": "expired"}
    # The owner's next debit that needs the credits releases the hold.
    assert spend(amount=-5).entry.balance_after == 0
    assert LedgerHold.objects.get(pk=placed.pk).status == HoldStatus.EXPIRED
    # Voiding it now changes nothing.
    voided = hold_void(hold_id=placed.pk, app="content", actor=MANAGER)
    assert voided.replayed and voided.hold.status == HoldStatus.EXPIRED
    assert_hold_invariants()


def test_holds_and_batches_release_expired_holds_too():
    fund("alice", 5)
    first = hold(amount=-5).hold
    expire(first.pk)
    assert hold(amount=-5, nonce="h2").hold.pk
    second = LedgerHold.objects.get(nonce="h2")
    expire(second.pk)
    results = entry_post_batch(app="content", actor=MANAGER, entries=[
        EntryRequest(owner_id="alice", operation="CREDIT_SPEND", nonce="b1", amount=-5),
    ])  # fmt: skip
    assert results[0].entry.balance_after == 0
    assert set(LedgerHold.objects.values_list("status", flat=True)) == {HoldStatus.EXPIRED}
    assert_hold_invariants()


def test_a_hold_expires_by_the_clock():
    fund("alice", 5)
    placed = hold(amount=-5, expires_in=1).hold
    assert balance_get(owner_id="alice").available == 0
    time.sleep(1.2)
    assert balance_get(owner_id="alice").available == 5
    with pytest.raises(HoldExpired):
        hold_capture(hold_id=placed.pk, app="content", actor=MANAGER)


def test_the_sweeps_hold_expired_event_shows_the_hold_as_the_other_hold_events():
    """The sweep writes ``hold.expired`` in SQL; its ``data`` must be what
    ``hold_data`` gives the other hold events for the same hold."""
    fund("alice", 5)
    placed = hold(amount=-2).hold
    expire(placed.pk)
    assert due_holds_sweep() == 1
    expired = LedgerHold.objects.get(pk=placed.pk)
    event = HoldEvent.objects.get(hold=placed.pk, type="hold.expired")
    assert event.data == hold_data(expired)
    assert set(event.data) == set(HOLD_FIELDS)
    assert event.data["status"] == "expired" and event.data["resolved_at"] is not None
    placed_event = HoldEvent.objects.get(hold=placed.pk, type="hold.placed")
    assert placed_event.data.keys() == event.data.keys()


def test_expire_holds_command_writes_statuses_once(capsys, django_capture_on_commit_callbacks):
    fund("alice", 5)
    fund("bob", 5)
    due = [hold(amount=-1, nonce=f"a{i}").hold.pk for i in range(3)]
    due.append(hold(amount=-2, nonce="b", owner_id="bob").hold.pk)
    kept = hold(amount=-1, nonce="kept").hold.pk
    for pk in due:
        expire(pk)
    before = holds_counted("content", "expired")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("expire_holds")
    assert "4 expired holds released" in capsys.readouterr().out
    assert set(LedgerHold.objects.filter(pk__in=due).values_list("status", flat=True)) == {
        HoldStatus.EXPIRED
    }
    assert LedgerHold.objects.get(pk=kept).status == HoldStatus.PENDING
    assert holds_counted("content", "expired") == before + 4
    with django_capture_on_commit_callbacks(execute=True):
        call_command("expire_holds")
    assert "0 expired holds released" in capsys.readouterr().out
    assert due_holds_sweep() == 0
    assert holds_counted("content", "expired") == before + 4
    assert_hold_invariants("alice")
    assert_hold_invariants("bob")


# --- dry run ---------------------------------------------------------------


def test_hold_dry_run_stores_nothing():
    fund("alice", 5)
    tried = hold(amount=-3, dry_run=True)
    assert tried.hold.pk is None and tried.hold.amount == -3
    assert not LedgerHold.objects.exists()
    assert balance_get(owner_id="alice").held == 0
    with pytest.raises(InsufficientBalance):
        hold(amount=-6, dry_run=True)
    # The nonce is still free.
    assert not hold(amount=-3).replayed


def test_system_actor_places_holds_of_any_size():
    fund("alice", 50)
    placed = hold(amount=-40, actor=SYSTEM).hold
    assert placed.created_by == SYSTEM.name
