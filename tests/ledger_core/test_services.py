"""ledger_core.services.entry_post: every posting rule, on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.test import override_settings

from ledger_core.actors import Actor
from ledger_core.exceptions import (
    Forbidden,
    InsufficientBalance,
    InvalidEntry,
    LimitReached,
    NonceConflict,
    UnknownOperation,
)
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import entry_post, next_utc_midnight
from ledger_core.signals import entry_posted
from tests.conftest import SYSTEM, fund

pytestmark = pytest.mark.django_db

ALICE = Actor(name="user:1:alice", owner_id="alice")
MANAGER = Actor(name="user:2:manager", owner_id="manager", can_post_any=True, can_view_any=True)


def post(**kwargs):
    kwargs.setdefault("app", "content")
    kwargs.setdefault("actor", ALICE)
    kwargs.setdefault("owner_id", "alice")
    return entry_post(**kwargs)


def assert_consistent(owner_id: str) -> None:
    total = LedgerEntry.objects.filter(owner_id=owner_id).aggregate(s=Sum("amount"))["s"] or 0
    balance = Balance.objects.get(owner_id=owner_id)
    newest = LedgerEntry.objects.filter(owner_id=owner_id).order_by("-id").first()
    assert balance.balance == total
    assert balance.balance >= 0
    assert newest.balance_after == balance.balance
    assert balance.version == LedgerEntry.objects.filter(owner_id=owner_id).count()


def test_credit_creates_entry_and_balance():
    result = post(operation="CREDIT_ADD", nonce="n1", actor=MANAGER, amount=25)
    assert not result.replayed
    entry = result.entry
    assert (entry.amount, entry.balance_after, entry.app, entry.operation) == (
        25,
        25,
        "content",
        "CREDIT_ADD",
    )
    assert entry.created_by == MANAGER.name
    assert Balance.objects.get(owner_id="alice").balance == 25
    assert_consistent("alice")


def test_configured_amount_when_omitted():
    fund("alice", 10)
    entry = post(operation="CONTENT_CREATION", nonce="c1").entry
    assert entry.amount == -5
    assert entry.balance_after == 5
    assert_consistent("alice")


def test_spend_beyond_balance_is_refused_and_stores_nothing():
    fund("alice", 3)
    with pytest.raises(InsufficientBalance) as info:
        post(operation="CONTENT_CREATION", nonce="c1")
    assert info.value.extra == {"balance": 3, "available": 3, "required": 5}
    assert LedgerEntry.objects.filter(owner_id="alice").count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 3


def test_debit_on_unknown_owner_is_insufficient_and_creates_no_balance():
    with pytest.raises(InsufficientBalance) as info:
        post(operation="CREDIT_SPEND", nonce="s1")
    assert info.value.extra == {"balance": 0, "available": 0, "required": 1}
    assert not Balance.objects.filter(owner_id="alice").exists()


def test_rejected_nonce_can_be_used_again():
    with pytest.raises(InsufficientBalance):
        post(operation="CREDIT_SPEND", nonce="retry-me")
    fund("alice", 1)
    result = post(operation="CREDIT_SPEND", nonce="retry-me")
    assert not result.replayed
    assert result.entry.balance_after == 0


def test_replay_returns_original_entry_without_moving_credits():
    fund("alice", 10)
    first = post(operation="CREDIT_SPEND", nonce="s1")
    again = post(operation="CREDIT_SPEND", nonce="s1", amount=-1)
    assert again.replayed
    assert again.entry.pk == first.entry.pk
    assert Balance.objects.get(owner_id="alice").balance == 9
    assert LedgerEntry.objects.filter(owner_id="alice", nonce="s1").count() == 1


def test_replay_wins_over_insufficient_balance():
    fund("alice", 5)
    first = post(operation="CONTENT_CREATION", nonce="c1")
    # Balance is now 0: a retry of the same request is still a replay, not a refusal.
    again = post(operation="CONTENT_CREATION", nonce="c1")
    assert again.replayed and again.entry.pk == first.entry.pk


@pytest.mark.parametrize(
    "change",
    [
        {"operation": "CONTENT_ACCESS"},
        {"app": "rewards", "operation": "CREDIT_SPEND"},
        {"operation": "CREDIT_SPEND", "actor": MANAGER, "amount": -2},
    ],
)
def test_same_nonce_different_payload_conflicts(change):
    fund("alice", 10)
    post(operation="CREDIT_SPEND", nonce="s1")
    kwargs = {"operation": "CREDIT_SPEND", "nonce": "s1", **change}
    with pytest.raises(NonceConflict):
        post(**kwargs)
    assert Balance.objects.get(owner_id="alice").balance == 9


def test_same_nonce_for_other_owner_is_independent():
    fund("alice", 1)
    fund("bob", 1)
    post(operation="CREDIT_SPEND", nonce="shared")
    bob = Actor(name="user:3:bob", owner_id="bob")
    result = post(owner_id="bob", actor=bob, operation="CREDIT_SPEND", nonce="shared")
    assert not result.replayed


def test_daily_reward_once_per_utc_day():
    post(operation="DAILY_REWARD", nonce="d1")
    with pytest.raises(LimitReached) as info:
        post(operation="DAILY_REWARD", nonce="d2")
    assert "next_claim_at" in info.value.extra
    assert info.value.extra["next_claim_at"].endswith("T00:00:00Z")
    assert Balance.objects.get(owner_id="alice").balance == 1
    # The retry of the successful claim is a replay, not a refusal.
    assert post(operation="DAILY_REWARD", nonce="d1").replayed


def test_daily_limit_is_shared_across_apps():
    post(operation="DAILY_REWARD", nonce="d1", app="content")
    with pytest.raises(LimitReached):
        post(operation="DAILY_REWARD", nonce="d2", app="rewards")


def test_next_utc_midnight():
    now = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert next_utc_midnight(now) == datetime(2026, 3, 2, tzinfo=UTC)


def test_signup_credit_once_per_owner():
    entry_post(owner_id="alice", operation="SIGNUP_CREDIT", nonce="a", app="site", actor=SYSTEM)
    with pytest.raises(LimitReached):
        entry_post(
            owner_id="alice", operation="SIGNUP_CREDIT", nonce="b", app="content", actor=MANAGER
        )


def test_zero_amount_operation_records_entry_without_moving_balance():
    fund("alice", 2)
    entry = post(operation="CONTENT_ACCESS", nonce="a1").entry
    assert entry.amount == 0 and entry.balance_after == 2
    assert_consistent("alice")


def test_zero_amount_operation_for_new_owner():
    entry = post(operation="CONTENT_ACCESS", nonce="a1").entry
    assert entry.balance_after == 0
    assert Balance.objects.get(owner_id="alice").version == 1


def test_owner_must_give_configured_amount():
    fund("alice", 10)
    with pytest.raises(InvalidEntry):
        post(operation="CREDIT_SPEND", nonce="s1", amount=-3)
    assert post(operation="CREDIT_SPEND", nonce="s2", amount=-1).entry.amount == -1


@pytest.mark.parametrize("amount", [0, -5, 1_000_001])
def test_manager_amount_must_have_sign_and_respect_cap(amount):
    with pytest.raises(InvalidEntry):
        post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=amount)
    assert not LedgerEntry.objects.exists()


@override_settings(LEDGER_MAX_ENTRY_AMOUNT=50)
def test_cap_is_read_at_use():
    with pytest.raises(InvalidEntry):
        post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=51)
    assert post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=50).entry.amount == 50


@override_settings(LEDGER_OPERATION_CONFIG={"CONTENT_CREATION": -7, "DAILY_REWARD": {"amount": 2}})
def test_site_overrides_amounts():
    fund("alice", 10)
    assert post(operation="CONTENT_CREATION", nonce="c").entry.amount == -7
    assert post(operation="DAILY_REWARD", nonce="d").entry.amount == 2


def test_manager_grants_any_size():
    entry = post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=12345).entry
    assert entry.amount == 12345


def test_owner_cannot_mint_or_touch_other_ledgers():
    with pytest.raises(Forbidden):
        post(operation="CREDIT_ADD", nonce="mint")
    fund("bob", 5)
    with pytest.raises(Forbidden):
        post(owner_id="bob", operation="CREDIT_SPEND", nonce="steal")
    assert not LedgerEntry.objects.filter(owner_id="alice").exists()
    assert Balance.objects.get(owner_id="bob").balance == 5


def test_manager_cannot_claim_daily_reward_for_others():
    with pytest.raises(Forbidden):
        post(operation="DAILY_REWARD", nonce="d", actor=MANAGER)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operation": "NOPE"},
        {"operation": "REFERRAL_BONUS"},  # a rewards operation, posted to content
        {"app": "nosuchapp", "operation": "CREDIT_SPEND"},
    ],
)
def test_unknown_operation_lists_allowed(kwargs):
    with pytest.raises(UnknownOperation) as info:
        post(nonce="x", **kwargs)
    if kwargs.get("app") != "nosuchapp":
        assert "CONTENT_CREATION" in info.value.extra["allowed"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"owner_id": ""},
        {"owner_id": "a" * 129},
        {"owner_id": "has space"},
        {"owner_id": "ünïcode"},
        {"owner_id": "slash/"},
        {"owner_id": "."},
        {"owner_id": ".."},
        {"nonce": ""},
        {"nonce": "x" * 129},
        {"nonce": "tab\there"},
        {"nonce": "é"},
        {"metadata": ["not", "an", "object"]},
        {"metadata": {"k": "x" * 5000}},
        {"metadata": {"k": "nul\x00"}},
    ],
)
def test_invalid_input_raises_and_stores_nothing(kwargs):
    base = {"operation": "CREDIT_ADD", "nonce": "ok", "actor": MANAGER, "amount": 1}
    with pytest.raises(InvalidEntry):
        post(**{**base, **kwargs})
    assert not LedgerEntry.objects.exists()
    assert not Balance.objects.exists()


def test_owner_id_accepts_full_alphabet():
    owner = "Az09_.@+:-"
    entry = post(owner_id=owner, operation="CREDIT_ADD", nonce="!~#", actor=MANAGER, amount=1)
    assert entry.entry.owner_id == owner
    for dots in ("...", ".x", "x.."):  # only "." and ".." are dot segments
        assert post(owner_id=dots, operation="CREDIT_ADD", nonce="d", actor=MANAGER,
                    amount=1).entry.owner_id == dots  # fmt: skip


def test_metadata_is_stored():
    entry = post(
        operation="CREDIT_ADD", nonce="m", actor=MANAGER, amount=1, metadata={"reason": "refund"}
    ).entry
    entry.refresh_from_db()
    assert entry.metadata == {"reason": "refund"}


def test_outer_atomic_rollback_leaves_nothing():
    fund("alice", 10)
    with pytest.raises(RuntimeError), transaction.atomic():
        post(operation="CONTENT_CREATION", nonce="c1")
        raise RuntimeError("caller fails after paying")
    assert Balance.objects.get(owner_id="alice").balance == 10
    assert not LedgerEntry.objects.filter(nonce="c1").exists()


def test_refusal_inside_outer_atomic_keeps_outer_transaction_usable():
    fund("alice", 10)
    with transaction.atomic():
        post(operation="DAILY_REWARD", nonce="d1")
        with pytest.raises(LimitReached):
            post(operation="DAILY_REWARD", nonce="d2")
        post(operation="CONTENT_CREATION", nonce="c1")
    assert Balance.objects.get(owner_id="alice").balance == 6
    assert_consistent("alice")


def test_signal_sent_after_commit_only(django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, entry, **kwargs):
        received.append(entry.pk)

    entry_posted.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            entry = post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=1).entry
            assert received == []
        assert len(callbacks) == 1
        assert received == [entry.pk]
        # A replay sends nothing.
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=1)
        assert received == [entry.pk]
    finally:
        entry_posted.disconnect(receiver)


def test_failing_signal_receiver_does_not_break_the_post(django_capture_on_commit_callbacks):
    def broken(sender, entry, **kwargs):
        raise ValueError("receiver bug")

    entry_posted.connect(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = post(operation="CREDIT_ADD", nonce="g", actor=MANAGER, amount=1)
        assert LedgerEntry.objects.filter(pk=result.entry.pk).exists()
    finally:
        entry_posted.disconnect(broken)


@pytest.mark.parametrize("statement", ["UPDATE {t} SET amount = 1000", "DELETE FROM {t}"])
def test_database_refuses_update_and_delete_of_entries(statement):
    from django.db import DatabaseError

    fund("alice", 1)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        connection.cursor() as cursor,
        transaction.atomic(),
    ):
        cursor.execute(statement.format(t=LedgerEntry._meta.db_table))
    assert LedgerEntry.objects.get(owner_id="alice").amount == 1


@pytest.mark.parametrize("table", [LedgerEntry._meta.db_table, Balance._meta.db_table])
def test_database_refuses_truncate_of_the_ledger_tables(table):
    from django.db import DatabaseError

    fund("alice", 1)
    with connection.cursor() as cursor:
        # The test suite's sessions may empty their throwaway databases
        # (tests/conftest.py); an ordinary session may not.
        cursor.execute("SET ledger.allow_truncate = 'off'")
        try:
            with pytest.raises(DatabaseError, match="TRUNCATE refused"), transaction.atomic():
                cursor.execute(f"TRUNCATE {table} CASCADE")
        finally:
            cursor.execute("SET ledger.allow_truncate = 'on'")
    assert LedgerEntry.objects.filter(owner_id="alice").count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 1


def test_orm_update_of_entry_is_refused():
    from django.db import DatabaseError

    entry = fund("alice", 1)
    entry.amount = 99
    with pytest.raises(DatabaseError), transaction.atomic():
        entry.save()


def test_database_refuses_negative_balance():
    from django.db import IntegrityError

    fund("alice", 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Balance.objects.filter(owner_id="alice").update(balance=-1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch", [False, True])
def test_connection_lost_while_storing_is_outcome_unknown_and_retry_is_safe(batch):
    """The database connection is cut (pg_terminate_backend, for real) just
    before the write: a single post cannot know what was stored and says so;
    either way a retry with the same nonce stores the entry exactly once."""
    import psycopg
    from django.db import connection

    from ledger_core.exceptions import OutcomeUnknown
    from ledger_core.services import EntryRequest, entry_post_batch

    fund("alice", 5, nonce="seed")
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
        dbname=settings["NAME"], password=settings["PASSWORD"] or None, autocommit=True,
    ) as admin:  # fmt: skip
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    def spend():
        if batch:
            return entry_post_batch(
                app="content", actor=Actor.system("test"),
                entries=[EntryRequest(owner_id="alice", operation="CREDIT_SPEND", nonce="n1")],
            )[0]  # fmt: skip
        return entry_post(
            owner_id="alice", operation="CREDIT_SPEND", nonce="n1", app="content",
            actor=Actor.system("test"),
        )  # fmt: skip

    if batch:
        # A batch's first statement takes its row locks: nothing can have been
        # stored, so the error stays a plain database error (503 unavailable).
        from django.db import OperationalError

        with pytest.raises(OperationalError):
            spend()
    else:
        # A single post is one statement that commits itself: the answer is lost.
        with pytest.raises(OutcomeUnknown) as unknown:
            spend()
        assert unknown.value.status == 503 and unknown.value.code == "outcome_unknown"
    connection.close()  # Django drops the broken connection at the request's end
    result = spend()
    assert not result.replayed
    assert spend().replayed  # and a further retry replays
    assert LedgerEntry.objects.filter(owner_id="alice", nonce="n1").count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 4


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_check_violation_is_raised_not_answered_as_a_nonce_in_flight(in_transaction):
    """Rows that disagree with what a post computes (here a balance row whose
    lot_credits says 5 with no lot behind it) trip a CHECK of the balance row:
    an error the post must not dress up as a retryable 409."""
    from django.db import IntegrityError

    fund("alice", 5)
    Balance.objects.filter(owner_id="alice").update(lot_credits=5)
    spend = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "s", "app": "content",
             "actor": ALICE}  # fmt: skip
    with pytest.raises(IntegrityError, match="ledger_balance_lot_credits_range"):
        if in_transaction:
            with transaction.atomic():
                entry_post(**spend)
        else:
            entry_post(**spend)
    assert not LedgerEntry.objects.filter(nonce="s").exists()
