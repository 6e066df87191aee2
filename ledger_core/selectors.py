"""Reads from the ledger: balances, entry history and holds.

Design decision: the balance is the materialised ``Balance`` row, read from
PostgreSQL on every request (one primary-key lookup whatever the history
length; owners with holds or credit lots also sum those, in the same
statement, so expiries count without any job). There is no balance cache:
one that Redis faults can leave behind a write would serve balances older
than a write already acknowledged, and
read-your-writes is a guarantee (docs/performance.md has the measurements).
History is keyset-paginated on ``(owner_id, id)`` so deep pages cost the same
as the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    F,
    Func,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.utils.dateparse import parse_datetime

from .chain import GENESIS
from .models import Balance, CreditLot, HoldStatus, LedgerEntry, LedgerHold
from .types import BalanceAt, BalanceView, ExpiringCredits

_BALANCE_TABLE = Balance._meta.db_table
_HOLD_TABLE = LedgerHold._meta.db_table
_LOT_TABLE = CreditLot._meta.db_table

__all__ = [
    "BalanceAt",
    "BalanceView",
    "balance_at",
    "balance_get",
    "balances_get",
    "entry_get",
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


_BALANCE_SELECT = f"""
SELECT b.owner_id, b.balance, b.version, b.updated_at, b.head_hash,
    CASE WHEN b.held = 0 THEN 0 ELSE (
        SELECT coalesce(-sum(h.amount), 0)::bigint FROM {_HOLD_TABLE} AS h
        WHERE h.owner_id = b.owner_id AND h.status = 'pending' AND h.expires_at > t.now
    ) END AS held,
    CASE WHEN b.lot_credits = 0 THEN 0 ELSE (
        SELECT coalesce(sum(l.remaining), 0)::bigint FROM {_LOT_TABLE} AS l
        WHERE l.owner_id = b.owner_id AND l.remaining > 0 AND l.expires_at <= t.now
    ) + (
        SELECT coalesce(sum((part->>'amount')::bigint), 0)::bigint
        FROM {_HOLD_TABLE} AS h, jsonb_array_elements(h.reserved) AS part, {_LOT_TABLE} AS l
        WHERE h.owner_id = b.owner_id AND h.status = 'pending' AND h.expires_at <= t.now
            AND l.entry = (part->>'entry')::bigint AND l.expires_at <= t.now
    ) END AS gone,
    CASE WHEN b.lot_credits = 0 THEN NULL ELSE (
        SELECT json_agg(json_build_object(
            'entry', s.entry, 'amount', s.remaining, 'expires_at', s.expires_at))
        FROM (
            SELECT l.entry, l.remaining, l.expires_at FROM {_LOT_TABLE} AS l
            WHERE l.owner_id = b.owner_id AND l.remaining > 0 AND l.expires_at > t.now
            ORDER BY l.expires_at, l.entry LIMIT %(expiring)s
        ) AS s
    ) END AS expiring,
    CASE WHEN b.lot_credits = 0 OR b.held = 0 THEN NULL ELSE (
        SELECT json_agg(json_build_object(
            'entry', l.entry, 'amount', l.remaining + r.amount, 'expires_at', l.expires_at))
        FROM (
            SELECT (part->>'entry')::bigint AS entry, sum((part->>'amount')::bigint) AS amount
            FROM {_HOLD_TABLE} AS h, jsonb_array_elements(h.reserved) AS part
            WHERE h.owner_id = b.owner_id AND h.status = 'pending' AND h.expires_at <= t.now
            GROUP BY 1
        ) AS r JOIN {_LOT_TABLE} AS l ON l.entry = r.entry AND l.expires_at > t.now
    ) END AS released
FROM {_BALANCE_TABLE} AS b, (SELECT statement_timestamp() AS now) AS t
WHERE {{owners}}
"""  # noqa: S608 (table names are model constants, values are parameters)
_BALANCE_SQL = _BALANCE_SELECT.format(owners="b.owner_id = %(owner)s")
_BALANCES_SQL = _BALANCE_SELECT.format(owners="b.owner_id = ANY(%(owners)b::text[])")

#: How many of the soonest-expiring lots a balance shows.
EXPIRING_SHOWN = 5


def balance_get(*, owner_id: str) -> BalanceView:
    """The current balance of ``owner_id`` (0 for an unknown owner), read from
    PostgreSQL: a read after an acknowledged post always sees it (inside a
    transaction, the transaction's own posts too).

    One statement, so one snapshot. Time counts without any job having run:
    ``held`` leaves out holds past their expiry, and ``balance`` leaves out
    what lots past their expiry still hold (their unconsumed rest, and what
    expired holds reserved from them), which the owner's next write or the
    sweeper posts as ``CREDIT_EXPIRY`` entries. An owner without holds or lots
    (``held`` and ``lot_credits`` 0) costs the primary-key look-up alone."""
    with connection.cursor() as cursor:
        cursor.execute(_BALANCE_SQL, {"owner": owner_id, "expiring": EXPIRING_SHOWN})
        row = cursor.fetchone()
    return _balance_view(owner_id, row)


def balances_get(*, owner_ids: Sequence[str]) -> list[BalanceView]:
    """The current balances of ``owner_ids``, in that order (0 for an unknown
    owner), as ``balance_get`` reads each: one statement, so one snapshot for
    all of them."""
    with connection.cursor() as cursor:
        cursor.execute(_BALANCES_SQL, {"owners": list(owner_ids), "expiring": EXPIRING_SHOWN})
        rows = {row[0]: row for row in cursor.fetchall()}
    return [_balance_view(owner_id, rows.get(owner_id)) for owner_id in owner_ids]


def _balance_view(owner_id: str, row: Sequence[Any] | None) -> BalanceView:
    """A row of ``_BALANCE_SELECT`` (None: the owner has no balance row) as a view."""
    if row is None:
        return BalanceView(
            owner_id=owner_id, balance=0, version=0, updated_at=None, head_hash=GENESIS
        )
    _, balance, version, updated_at, head_hash, held, gone, expiring, released = row
    return BalanceView(
        owner_id=owner_id,
        balance=balance - gone,
        version=version,
        updated_at=updated_at,
        held=held,
        head_hash=head_hash,
        expiring=_soonest_lots(expiring, released),
    )


def _soonest_lots(expiring: Any, released: Any) -> tuple[ExpiringCredits, ...]:
    """The soonest-expiring lots' credits: ``expiring`` (the lots' rows), with
    what holds past their expiry reserved from unexpired lots back in those
    lots (``released``; the rows catch up when the hold is settled), up to
    ``EXPIRING_SHOWN`` soonest first."""
    lots = {item["entry"]: item for item in _json(expiring)}
    lots.update((item["entry"], item) for item in _json(released))
    items = [
        (parse_datetime(item["expires_at"]), entry, item["amount"]) for entry, item in lots.items()
    ]
    return tuple(
        ExpiringCredits(amount=amount, expires_at=expires_at)
        for expires_at, _, amount in sorted(items)[:EXPIRING_SHOWN]
    )


def _json(value: Any) -> list[dict[str, Any]]:
    """A ``json`` column (a string when no type adapter decoded it), or []."""
    if isinstance(value, str):
        return json.loads(value)
    return value or []


class ClockTimestamp(Func):
    """PostgreSQL's ``clock_timestamp()``: the database clock that hold
    expiries are set and checked with."""

    template = "clock_timestamp()"
    output_field = DateTimeField()


def hold_list(
    *, owner_id: str, status: str | None = None, nonce: str | None = None
) -> QuerySet[LedgerHold]:
    """``owner_id``'s holds, newest first, each with its ``status`` as of now
    (a pending hold past ``expires_at`` is ``expired``); ``status`` filters on
    it, ``nonce`` finds the one hold placed with it."""
    qs = LedgerHold.objects.filter(owner_id=owner_id).annotate(current_status=_CURRENT_STATUS)
    if nonce:
        qs = qs.filter(nonce=nonce)
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


def _with_reversed_by(qs: QuerySet[LedgerEntry]) -> QuerySet[LedgerEntry]:
    """``qs`` with each entry's ``reversed_by``: the id of its REVERSAL, or None."""
    reversal = LedgerEntry.objects.filter(owner_id=OuterRef("owner_id"), reverses=OuterRef("id"))
    return qs.annotate(reversed_by=Subquery(reversal.values("id")[:1]))


def entry_get(*, entry_id: int) -> LedgerEntry | None:
    """Entry ``entry_id`` (of any owner and app) with its ``reversed_by``, or None."""
    if entry_id <= 0:
        return None
    return _with_reversed_by(LedgerEntry.objects.filter(pk=entry_id)).first()


def entry_list(
    *,
    owner_id: str,
    operation: str | None = None,
    app: str | None = None,
    nonce: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[LedgerEntry]:
    """``owner_id``'s entries, newest first, optionally filtered.

    ``since`` is inclusive and ``until`` exclusive, both on ``created_at``;
    ``nonce`` finds the one entry posted with it, if any.
    """
    qs = _with_reversed_by(LedgerEntry.objects.filter(owner_id=owner_id))
    if nonce:
        qs = qs.filter(nonce=nonce)
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
