"""Expiring credits through the services: lots, consumption order, expiry
entries without and with the sweeper, and how holds and reversals treat lots.
Real PostgreSQL; lots that must expire get an expiry a moment ahead and the
test waits for it."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from ledger_core.actors import Actor
from ledger_core.exceptions import InsufficientBalance, InvalidEntry, NotReversible
from ledger_core.models import Balance, CreditLot, LedgerEntry, LedgerHold
from ledger_core.selectors import balance_get
from ledger_core.services import (
    EntryRequest,
    entry_post,
    entry_post_batch,
    entry_reverse,
    hold_capture,
    hold_place,
    hold_void,
)
from tests.conftest import SYSTEM, fund
from tests.ledger_core.test_holds import expire

pytestmark = pytest.mark.django_db

MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)
ALICE = Actor(name="alice", owner_id="alice")
SOON = 0.6  # seconds until a "soon" lot expires


def grant(amount: int, *, days: float | None = None, soon: bool = False, owner_id="alice"):
    """A CREDIT_ADD that expires in ``days`` (or in SOON seconds)."""
    expires_at = timezone.now() + (timedelta(seconds=SOON) if soon else timedelta(days=days or 1))
    return entry_post(
        owner_id=owner_id, operation="CREDIT_ADD", nonce=f"g{time.monotonic_ns()}",
        app="content", actor=SYSTEM, amount=amount, expires_at=expires_at,
    ).entry  # fmt: skip


def spend(amount: int, owner_id="alice"):
    return entry_post(
        owner_id=owner_id, operation="CREDIT_SPEND", nonce=f"s{time.monotonic_ns()}",
        app="content", actor=MANAGER, amount=-amount,
    ).entry  # fmt: skip


def wait_for_expiry():
    time.sleep(SOON + 0.1)


def assert_lots_add_up(owner_id="alice"):
    """Each lot's amount is its rest + held + consumed + expired; lot_credits
    is the lots' rest + held; the balance is the entries' sum."""
    reserved: dict[int, int] = {}
    for hold in LedgerHold.objects.filter(owner_id=owner_id, status="pending"):
        for part in hold.reserved:
            reserved[part["entry"]] = reserved.get(part["entry"], 0) + part["amount"]
    lots = list(CreditLot.objects.filter(owner_id=owner_id))
    for lot in lots:
        assert lot.amount == lot.remaining + reserved.get(lot.entry, 0) + lot.consumed + lot.expired
    row = Balance.objects.get(owner_id=owner_id)
    assert row.lot_credits == sum(lot.remaining + reserved.get(lot.entry, 0) for lot in lots)
    entries = LedgerEntry.objects.filter(owner_id=owner_id)
    assert row.balance == entries.aggregate(s=Sum("amount"))["s"]
    assert 0 <= row.held <= row.balance and row.lot_credits <= row.balance
    # Every CREDIT_EXPIRY entry is what its lot had left.
    for expiry in entries.filter(operation="CREDIT_EXPIRY"):
        lot = next(lot for lot in lots if lot.entry == expiry.metadata["lot"])
        assert expiry.created_at >= lot.expires_at and expiry.created_by == "system"


# --- lots and consumption order ----------------------------------------------


def test_a_credit_with_an_expiry_is_a_lot():
    entry = grant(5, days=3)
    assert entry.expires_at is not None
    lot = CreditLot.objects.get(entry=entry.pk)
    assert (lot.amount, lot.remaining, lot.owner_id) == (5, 5, "alice")
    view = balance_get(owner_id="alice")
    assert view.balance == 5 and [(e.amount, e.expires_at) for e in view.expiring] == [
        (5, lot.expires_at)
    ]
    assert_lots_add_up()


def test_debits_consume_soonest_expiry_first_then_non_expiring():
    fund("alice", 10)  # never expires: consumed last
    later = grant(4, days=3)
    sooner = grant(3, days=1)
    tie = grant(2, days=1)  # same day as `sooner`, but a later entry
    first = spend(4)
    assert first.consumed == [
        {"entry": sooner.pk, "amount": 3},
        {"entry": tie.pk, "amount": 1},
    ]
    second = spend(6)
    assert second.consumed == [{"entry": tie.pk, "amount": 1}, {"entry": later.pk, "amount": 4}]
    third = spend(2)
    assert third.consumed is None  # only non-expiring credits were left
    assert list(CreditLot.objects.values_list("remaining", flat=True)) == [0, 0, 0]
    assert balance_get(owner_id="alice").balance == 19 - 12
    assert_lots_add_up()


def test_expiry_time_ties_go_to_the_oldest_entry():
    expires_at = timezone.now() + timedelta(days=2)
    lots = [
        entry_post(owner_id="alice", operation="CREDIT_ADD", nonce=f"t{i}", app="content",
                   actor=SYSTEM, amount=1, expires_at=expires_at).entry.pk
        for i in range(3)
    ]  # fmt: skip
    assert [part["entry"] for part in spend(3).consumed] == lots


def test_a_debit_takes_lots_beyond_the_first_page():
    lots = [grant(1, days=1 + i / 100).pk for i in range(12)]
    fund("alice", 5)
    assert [part["entry"] for part in spend(10).consumed] == lots[:10]
    assert [part["entry"] for part in spend(4).consumed] == lots[10:]
    assert_lots_add_up()


def test_expires_at_rules():
    with pytest.raises(InvalidEntry) as info:
        entry_post(
            owner_id="alice",
            operation="CREDIT_SPEND",
            nonce="x",
            app="content",
            actor=MANAGER,
            amount=-1,
            expires_at=timezone.now() + timedelta(days=1),
        )
    assert info.value.extra["field"] == "expires_at"
    for when in (timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(days=3700)):
        with pytest.raises(InvalidEntry):
            grant_at(when)
    fund("alice", 1)
    with pytest.raises(InvalidEntry, match="Only managers"):
        entry_post(
            owner_id="alice",
            operation="DAILY_REWARD",
            nonce="d",
            app="content",
            actor=ALICE,
            expires_at=timezone.now() + timedelta(days=1),
        )
    assert not CreditLot.objects.exists()


def grant_at(when):
    return entry_post(owner_id="alice", operation="CREDIT_ADD", nonce="at", app="content",
                      actor=MANAGER, amount=1, expires_at=when)  # fmt: skip


def test_operation_default_lifetime(settings):
    settings.LEDGER_OPERATION_CONFIG = {"DAILY_REWARD": {"expires_after": "30d"}}
    before = timezone.now()
    entry = entry_post(
        owner_id="alice", operation="DAILY_REWARD", nonce="d1", app="content", actor=ALICE
    ).entry
    assert before + timedelta(days=30) <= entry.expires_at <= timezone.now() + timedelta(days=30)
    assert CreditLot.objects.filter(entry=entry.pk).exists()
    # A replay is the same entry even though "30 days from now" moved on.
    again = entry_post(
        owner_id="alice", operation="DAILY_REWARD", nonce="d1", app="content", actor=ALICE
    )
    assert again.replayed and again.entry.pk == entry.pk


# --- expiry ----------------------------------------------------------------------


def test_expired_credits_are_gone_before_any_sweep_and_the_next_write_posts_the_expiry():
    fund("alice", 2)
    lot = grant(5, soon=True)
    assert balance_get(owner_id="alice").balance == 7
    wait_for_expiry()
    view = balance_get(owner_id="alice")
    assert (view.balance, view.available, view.expiring) == (2, 2, ())
    assert not LedgerEntry.objects.filter(operation="CREDIT_EXPIRY").exists()  # nothing ran
    with pytest.raises(InsufficientBalance) as info:
        spend(3)
    assert info.value.extra["available"] == 2
    debit = spend(2)
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    assert (expiry.amount, expiry.metadata, expiry.balance_after) == (-5, {"lot": lot.pk}, 2)
    assert expiry.seq == debit.seq - 1 and debit.consumed is None and debit.balance_after == 0
    assert CreditLot.objects.get(entry=lot.pk).expired == 5
    assert_lots_add_up()


def test_expire_credits_posts_one_entry_per_lot_once(django_capture_on_commit_callbacks):
    from prometheus_client import REGISTRY

    fund("bob", 1)
    lots = [grant(2, soon=True), grant(3, soon=True), grant(4, soon=True, owner_id="bob")]
    kept = grant(1, days=2)
    wait_for_expiry()
    before = REGISTRY.get_sample_value("ledger_credits_expired_total", {"app": "content"}) or 0
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("expire_credits", "--no-progress", stdout=out)
    assert out.getvalue().startswith("3 lots expired")
    expiries = LedgerEntry.objects.filter(operation="CREDIT_EXPIRY")
    assert sorted(e.metadata["lot"] for e in expiries) == sorted(lot.pk for lot in lots)
    after = REGISTRY.get_sample_value("ledger_credits_expired_total", {"app": "content"})
    assert after == before + 9
    call_command("expire_credits", "--no-progress", stdout=io.StringIO())
    assert expiries.count() == 3
    assert CreditLot.objects.get(entry=kept.pk).remaining == 1
    assert balance_get(owner_id="alice").balance == 1 and balance_get(owner_id="bob").balance == 1
    out = io.StringIO()
    call_command("verify_ledger", "--no-progress", stdout=out)
    assert "ledger consistent" in out.getvalue()
    assert_lots_add_up()
    assert_lots_add_up("bob")


# --- holds -------------------------------------------------------------------------


def hold(amount: int):
    return hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce=f"h{time.monotonic_ns()}",
                      app="content", actor=MANAGER, amount=-amount).hold  # fmt: skip


def test_holds_reserve_from_lots_in_order_and_captures_consume_them():
    fund("alice", 5)
    lot = grant(4, days=1)
    placed = hold(6)
    assert placed.reserved == [{"entry": lot.pk, "amount": 4}]
    assert CreditLot.objects.get(entry=lot.pk).remaining == 0
    entry = hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=-5).entry
    assert entry.consumed == [{"entry": lot.pk, "amount": 4}]
    assert CreditLot.objects.get(entry=lot.pk).consumed == 4
    assert balance_get(owner_id="alice").balance == 4
    assert_lots_add_up()


def test_credits_held_from_an_expired_lot_stay_reserved_until_the_hold_resolves():
    fund("alice", 5)
    lot = grant(5, soon=True)
    placed = hold(3)  # 3 of the lot held, 2 of it free
    wait_for_expiry()
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held, view.available) == (8, 3, 5)
    captured = hold(1)  # a write: the lot's free rest (2) expires now
    assert LedgerEntry.objects.get(operation="CREDIT_EXPIRY").amount == -2
    entry = hold_capture(hold_id=placed.pk, app="content", actor=MANAGER).entry
    assert entry.consumed == [{"entry": lot.pk, "amount": 3}]
    hold_void(hold_id=captured.pk, app="content", actor=MANAGER)
    assert LedgerEntry.objects.filter(operation="CREDIT_EXPIRY").count() == 1
    assert balance_get(owner_id="alice").balance == 5 - 0
    assert_lots_add_up()


def test_voiding_a_hold_on_an_expired_lot_expires_its_credits_then():
    lot = grant(4, soon=True)
    placed = hold(4)
    wait_for_expiry()
    assert balance_get(owner_id="alice").balance == 4  # still held
    hold_void(hold_id=placed.pk, app="content", actor=MANAGER)
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    assert (expiry.amount, expiry.metadata) == (-4, {"lot": lot.pk})
    assert balance_get(owner_id="alice").balance == 0
    assert_lots_add_up()


def test_a_partial_capture_returns_the_rest_to_its_lot():
    lot = grant(4, days=1)
    placed = hold(4)
    hold_capture(hold_id=placed.pk, app="content", actor=MANAGER, amount=-1)
    assert CreditLot.objects.get(entry=lot.pk).remaining == 3
    assert_lots_add_up()


def test_what_a_hold_past_its_expiry_reserved_shows_as_expiring_before_any_sweep(alice_client):
    first, second = grant(4, days=1), grant(3, days=2)
    placed = hold(6)  # all of the first lot (its row's rest is 0), 2 of the second
    assert [(e.amount, e.expires_at) for e in balance_get(owner_id="alice").expiring] == [
        (1, second.expires_at)
    ]
    expire(placed.pk)  # unswept: the lots' rows still have 0 and 1 left
    view = balance_get(owner_id="alice")
    assert (view.balance, view.held) == (7, 0)
    assert [(e.amount, e.expires_at) for e in view.expiring] == [
        (4, first.expires_at), (3, second.expires_at),
    ]  # fmt: skip
    body = alice_client.get("/api/content/ledger/alice/").json()
    assert [e["amount"] for e in body["expiring"]] == [4, 3]
    assert LedgerHold.objects.get(pk=placed.pk).status == "pending"
    assert sorted(CreditLot.objects.values_list("remaining", flat=True)) == [0, 1]


# --- reversals --------------------------------------------------------------------


def test_reversing_a_debit_gives_credits_back_to_its_lots():
    fund("alice", 1)
    lot = grant(3, days=1)
    debit = spend(4)
    assert debit.consumed == [{"entry": lot.pk, "amount": 3}]
    entry_reverse(entry_id=debit.pk, app="content", actor=MANAGER, nonce="r", reason="refund")
    assert CreditLot.objects.get(entry=lot.pk).remaining == 3
    assert_lots_add_up()


def test_reversing_a_debit_whose_lot_expired_expires_those_credits_again():
    fund("alice", 1)
    lot = grant(3, soon=True)
    debit = spend(3)
    wait_for_expiry()
    reversal = entry_reverse(
        entry_id=debit.pk, app="content", actor=MANAGER, nonce="r", reason="refund"
    ).entry
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    assert (expiry.amount, expiry.metadata, expiry.seq) == (-3, {"lot": lot.pk}, reversal.seq + 1)
    assert balance_get(owner_id="alice").balance == 1
    assert_lots_add_up()


def test_reversing_a_grant_takes_its_own_lot_first():
    fund("alice", 10)
    other = grant(5, days=1)
    mine = grant(5, days=2)
    spend(2)  # from `other`, the sooner one
    reversal = entry_reverse(
        entry_id=mine.pk, app="content", actor=MANAGER, nonce="r", reason="wrong owner"
    ).entry
    assert reversal.consumed == [{"entry": mine.pk, "amount": 5}]
    assert CreditLot.objects.get(entry=other.pk).remaining == 3
    assert_lots_add_up()


def test_reversing_a_grant_whose_lot_expired_unswept_cannot_spend_the_expired_credits():
    grant(7, days=1)
    expired = grant(30, soon=True)
    wait_for_expiry()  # no sweep: the balance row still counts the 30
    with pytest.raises(InsufficientBalance) as refused:
        entry_reverse(entry_id=expired.pk, app="content", actor=MANAGER, nonce="r", reason="x")
    assert (refused.value.extra["available"], refused.value.extra["required"]) == (7, 30)
    assert balance_get(owner_id="alice").balance == 7
    assert not LedgerEntry.objects.filter(operation="REVERSAL").exists()
    assert_lots_add_up()


def test_reversing_a_grant_whose_lot_expired_unswept_takes_other_credits():
    fund("alice", 100)
    expired = grant(30, soon=True)
    wait_for_expiry()
    reversal = entry_reverse(
        entry_id=expired.pk, app="content", actor=MANAGER, nonce="r", reason="x"
    ).entry
    # The lot's rest expired first (its own entry), then the reversal took
    # its 30 from the credits that do not expire.
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    assert (expiry.amount, expiry.seq, reversal.seq) == (-30, 3, 4)
    assert (reversal.amount, reversal.balance_after, reversal.consumed) == (-30, 70, None)
    assert_lots_add_up()


def test_expiry_entries_cannot_be_reversed():
    grant(2, soon=True)
    wait_for_expiry()
    call_command("expire_credits", "--no-progress", stdout=io.StringIO())
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    with pytest.raises(NotReversible):
        entry_reverse(entry_id=expiry.pk, app="content", actor=MANAGER, nonce="r", reason="x")


# --- batches ------------------------------------------------------------------------


def test_batches_create_and_consume_lots_in_order():
    fund("alice", 2)
    expires_at = timezone.now() + timedelta(days=1)
    results = entry_post_batch(app="content", actor=SYSTEM, entries=[
        EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce="b1", amount=3,
                     expires_at=expires_at),
        EntryRequest(owner_id="alice", operation="CREDIT_SPEND", nonce="b2", amount=-4),
        EntryRequest(owner_id="bob", operation="CREDIT_ADD", nonce="b3", amount=1),
    ])  # fmt: skip
    lot, debit = results[0].entry, results[1].entry
    assert lot.expires_at is not None
    assert debit.consumed == [{"entry": lot.pk, "amount": 3}] and debit.balance_after == 1
    assert results[2].entry.balance_after == 1
    assert_lots_add_up()


# --- API ------------------------------------------------------------------------------


def test_api_grants_expiring_credits_and_shows_lots(manager_client, alice_client):
    expires_at = (timezone.now() + timedelta(days=2)).isoformat()
    body = {"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "promo", "amount": 5,
            "expires_at": expires_at}  # fmt: skip
    response = manager_client.post("/api/content/ledger/", body, format="json")
    assert response.status_code == 201, response.content
    grant_id = response.json()["id"]
    assert response.json()["expires_at"] is not None
    again = manager_client.post("/api/content/ledger/", body, format="json")
    assert again.status_code == 200
    other = manager_client.post("/api/content/ledger/", {**body, "expires_at": None}, format="json")
    assert other.status_code == 409 and other.json()["code"] == "nonce_conflict"
    balance = alice_client.get("/api/content/ledger/alice/").json()
    assert balance["expiring"] == [{"amount": 5, "expires_at": response.json()["expires_at"]}]
    spend = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "s1"}
    spent = alice_client.post("/api/content/ledger/", spend, format="json").json()
    assert spent["consumed"] == [{"entry": grant_id, "amount": 1}]
    owner_try = {**spend, "operation": "DAILY_REWARD", "nonce": "d", "expires_at": expires_at}
    refused = alice_client.post("/api/content/ledger/", owner_try, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "expires_at"
    bad = manager_client.post("/api/content/ledger/", {**body, "nonce": "x", "expires_at": "soon"},
                              format="json")  # fmt: skip
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_a_retry_after_the_lifetime_ended_answers_the_grant_it_made(manager_client):
    """Idempotency outlives expires_at: a grant retried once its lifetime has
    passed (say after an outcome_unknown) is the replay, not a 400."""
    expires_at = timezone.now() + timedelta(seconds=SOON)
    body = {"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "late", "amount": 5,
            "expires_at": expires_at.isoformat()}  # fmt: skip
    first = manager_client.post("/api/content/ledger/", body, format="json")
    assert first.status_code == 201, first.content
    wait_for_expiry()
    again = manager_client.post("/api/content/ledger/", body, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.content
    assert again["Idempotent-Replayed"] == "true"
    other = manager_client.post("/api/content/ledger/", {**body, "amount": 6}, format="json")
    assert other.status_code == 409 and other.json()["code"] == "nonce_conflict"
    new = manager_client.post("/api/content/ledger/", {**body, "nonce": "new"}, format="json")
    assert new.status_code == 400 and new.json()["field"] == "expires_at", new.content
    # The same in a batch: the retry replays, a new post is refused.
    items = [
        EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce=nonce, amount=5,
                     expires_at=expires_at)
        for nonce in ("late", "new")
    ]  # fmt: skip
    results = entry_post_batch(app="content", actor=MANAGER, entries=items, atomic=False)
    assert results[0].replayed and results[0].entry.pk == first.json()["id"]
    assert isinstance(results[1].error, InvalidEntry)
    assert results[1].error.extra["field"] == "expires_at"
    assert LedgerEntry.objects.filter(operation="CREDIT_ADD").count() == 1


def test_verify_ledger_checks_every_lot():
    from django.db import connection

    fund("alice", 1)
    lot = grant(4, days=1)
    spend(2)
    grant(1, soon=True)
    out = io.StringIO()
    call_command("verify_ledger", "--no-progress", stdout=out)
    assert "ledger consistent" in out.getvalue()
    wait_for_expiry()
    out = io.StringIO()
    call_command("verify_ledger", "--no-progress", stdout=out)
    assert "note: 1 credit lot(s) past their expiry" in out.getvalue()
    with pytest.raises(SystemExit):
        call_command("verify_ledger", "--no-progress", "--swept", stdout=io.StringIO())
    call_command("expire_credits", "--no-progress", stdout=io.StringIO())
    call_command("verify_ledger", "--no-progress", "--swept", stdout=io.StringIO())
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_core_creditlot SET remaining = 9 WHERE entry = %s", [lot.pk])
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_ledger", "--no-progress", stdout=out)
    report = out.getvalue()
    assert f"lot {lot.pk}: amount 4 but rest 9 + held 0 + consumed 2 + expired 0" in report
    assert "owner=alice: lot_credits 2 but the lots hold 9" in report
