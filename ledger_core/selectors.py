"""Reads from the ledger: balances and entry history.

Design decision: the balance is the materialised ``Balance`` row, read from
PostgreSQL on every request (one primary-key lookup whatever the history
length). There is no balance cache: one that Redis faults can leave behind a
write would serve balances older than a write already acknowledged, and
read-your-writes is a guarantee (docs/performance.md has the measurements).
History is keyset-paginated on ``(owner_id, id)`` so deep pages cost the same
as the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    DateTimeField,
    F,
    Func,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from .models import Balance, HoldStatus, LedgerEntry, LedgerHold
from .types import BalanceAt, BalanceView

__all__ = [
    "BalanceAt",
    "BalanceView",
    "balance_at",
    "balance_get",
    "entry_list",
    "hold_get",
    "hold_list",
    "ledger_exists",
    "owners_unknown",
]


def ledger_exists(*, owner_id: str) -> bool:
    """Whether ``owner_id`` has a ledger (a balance row: any entry creates one)."""
    return Balance.objects.filter(owner_id=owner_id).exists()


def owners_unknown(*, owner_ids: Iterable[str]) -> list[str]:
    """Those of ``owner_ids`` that have neither a ledger nor a user of that name
    (a regular user's owner id is their username), sorted."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    wanted = sorted(set(owner_ids))
    known: set[str] = set()
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        known.update(Balance.objects.filter(owner_id__in=chunk).values_list("owner_id", flat=True))
        known.update(
            User.objects.filter(**{f"{User.USERNAME_FIELD}__in": chunk}).values_list(
                User.USERNAME_FIELD, flat=True
            )
        )
    return [owner for owner in wanted if owner not in known]


def balance_get(*, owner_id: str) -> BalanceView:
    """The current balance of ``owner_id`` (0 for an unknown owner), read from
    PostgreSQL: a read after an acknowledged post always sees it (inside a
    transaction, the transaction's own posts too)."""
    # One statement (one snapshot): the balance and what its unexpired holds
    # reserve; ``held`` still counts expired holds until they are released.
    pending = LedgerHold.objects.filter(
        owner_id=OuterRef("owner_id"), status=HoldStatus.PENDING, expires_at__gt=ClockTimestamp()
    )
    row = (
        Balance.objects.filter(owner_id=owner_id)
        .annotate(
            unexpired=Case(
                When(held=0, then=Value(0)),
                default=Coalesce(
                    Subquery(
                        pending.values("owner_id").annotate(total=Sum("amount")).values("total")
                    ),
                    0,
                ),
                output_field=BigIntegerField(),
            )
        )
        .values_list("balance", "version", "updated_at", "unexpired")
        .first()
    )
    if row is None:
        return BalanceView(owner_id=owner_id, balance=0, version=0, updated_at=None)
    return BalanceView(
        owner_id=owner_id, balance=row[0], version=row[1], updated_at=row[2], held=-row[3]
    )


class ClockTimestamp(Func):
    """PostgreSQL's ``clock_timestamp()``: the database clock that hold
    expiries are set and checked with."""

    template = "clock_timestamp()"
    output_field = DateTimeField()


def hold_list(*, owner_id: str, status: str | None = None) -> QuerySet[LedgerHold]:
    """``owner_id``'s holds, newest first, each with its ``status`` as of now
    (a pending hold past ``expires_at`` is ``expired``); ``status`` filters on it."""
    qs = LedgerHold.objects.filter(owner_id=owner_id).annotate(current_status=_CURRENT_STATUS)
    if status:
        qs = qs.filter(current_status=status)
    return qs.order_by("-id")


def hold_get(*, hold_id: int, app: str) -> LedgerHold | None:
    """Hold ``hold_id`` of ``app`` with its current status, or None."""
    if hold_id <= 0:
        return None
    return (
        LedgerHold.objects.filter(pk=hold_id, app=app)
        .annotate(current_status=_CURRENT_STATUS)
        .first()
    )


def balance_at(*, owner_id: str, at: datetime) -> BalanceAt:
    """``owner_id``'s balance as of ``at``: the ``balance_after`` of the last
    entry created at or before it (entries' times follow the order they were
    applied in). One index look-up on ``(owner_id, created_at)``, whatever the
    history's length."""
    row = (
        LedgerEntry.objects.filter(owner_id=owner_id, created_at__lte=at)
        .order_by("-created_at", "-id")
        .values_list("balance_after", "seq")
        .first()
    )
    balance, version = row if row is not None else (0, 0)
    return BalanceAt(owner_id=owner_id, at=at, balance=balance, version=version or 0)


def entry_list(
    *,
    owner_id: str,
    operation: str | None = None,
    app: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[LedgerEntry]:
    """``owner_id``'s entries, newest first, optionally filtered.

    ``since`` is inclusive and ``until`` exclusive, both on ``created_at``.
    """
    reversal = LedgerEntry.objects.filter(owner_id=OuterRef("owner_id"), reverses=OuterRef("id"))
    qs = LedgerEntry.objects.filter(owner_id=owner_id).annotate(
        reversed_by=Subquery(reversal.values("id")[:1])
    )
    if operation:
        qs = qs.filter(operation=operation)
    if app:
        qs = qs.filter(app=app)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-id")


_CURRENT_STATUS = Case(
    When(
        status=HoldStatus.PENDING,
        expires_at__lte=ClockTimestamp(),
        then=Value(HoldStatus.EXPIRED.value),
    ),
    default=F("status"),
    output_field=CharField(),
)
