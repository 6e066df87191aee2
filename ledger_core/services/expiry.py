"""Settling what time has ended: holds past their expiry and credit lots past
theirs.

Design decision: nothing waits for a job. From ``expires_at`` on, reads leave
out expired holds and the unconsumed rest of expired lots, and captures answer
``hold_expired``. The rows catch up when the owner next writes or a sweeper
runs (``manage.py expire_holds`` / ``expire_credits``): ``settle_locked``
releases due holds (their credits go back to ``available``, and what they
reserved from lots back to those lots) and then posts one ``CREDIT_EXPIRY``
entry per due lot for its rest. Every caller first holds the owners' balance
rows (in owner order, as every writer does), and each step changes only rows
still pending or still holding credits, so however many run at once, a hold
is released once and a lot's rest leaves the balance once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction

from .. import chain, metrics
from ..models import (
    CREDIT_EXPIRY,
    Balance,
    CreditLot,
    HoldEvent,
    HoldStatus,
    LedgerEntry,
    LedgerHold,
)
from ..signals import entry_posted
from .rows import entries_insert, entry_fingerprint

decision_log = logging.getLogger("ledger_core.decisions")
logger = logging.getLogger("ledger_core.services")

_BALANCE_TABLE = Balance._meta.db_table
_HOLD_TABLE = LedgerHold._meta.db_table
_EVENT_TABLE = HoldEvent._meta.db_table
_LOT_TABLE = CreditLot._meta.db_table

# Due holds: expired, their reservation leaves ``held``, and what they
# reserved from lots goes back to the lots.
_RELEASE_SQL = f"""
WITH due AS (
    UPDATE {_HOLD_TABLE} SET status = '{HoldStatus.EXPIRED}', resolved_at = %(now)s,
        resolved_by = 'system'
    WHERE owner_id = ANY(%(owners)b::text[]) AND status = '{HoldStatus.PENDING}'
        AND expires_at <= %(now)s
    RETURNING id, owner_id, app, operation, amount, reserved, status, expires_at, nonce,
        created_at, resolved_at, entry
), released AS (
    UPDATE {_BALANCE_TABLE} AS b SET held = b.held + t.total
    FROM (SELECT owner_id, sum(amount) AS total FROM due GROUP BY owner_id) AS t
    WHERE b.owner_id = t.owner_id
), back AS (
    UPDATE {_LOT_TABLE} AS l SET remaining = l.remaining + r.amount
    FROM (
        SELECT (part->>'entry')::bigint AS lot, sum((part->>'amount')::bigint) AS amount
        FROM due, jsonb_array_elements(due.reserved) AS part GROUP BY 1
    ) AS r
    WHERE l.entry = r.lot
), events AS (
    INSERT INTO {_EVENT_TABLE} (hold, owner_id, app, type, created_at, data)
    SELECT id, owner_id, app, 'hold.expired', %(now)s, jsonb_build_object(
        'id', id, 'owner_id', owner_id, 'app', app, 'operation', operation, 'amount', amount,
        'status', status, 'expires_at', ledger_hash_time(expires_at), 'nonce', nonce,
        'created_at', ledger_hash_time(created_at), 'resolved_at', ledger_hash_time(resolved_at),
        'entry', entry)
    FROM due
)
SELECT id, owner_id, app, operation, amount FROM due
"""  # noqa: S608 (table names are model constants, values are parameters)

# Due lots, in consumption order per owner.
_DUE_SQL = f"""
SELECT entry, owner_id, app, remaining, expiries FROM {_LOT_TABLE}
WHERE owner_id = ANY(%(owners)b::text[]) AND remaining > 0 AND expires_at <= %(now)s
ORDER BY owner_id, expires_at, entry
"""  # noqa: S608
_MICROSECOND = timedelta(microseconds=1)


@dataclasses.dataclass(slots=True)
class ExpiryEntry:
    """A CREDIT_EXPIRY entry as a sweep builds it (a model instance per lot
    would cost the sweep more than the rest of its Python)."""

    owner_id: str
    app: str
    amount: int
    balance_after: int
    nonce: str
    fingerprint: str
    metadata: dict
    created_at: datetime
    seq: int
    prev_hash: str
    hash: str = ""
    pk: int | None = None
    operation: str = CREDIT_EXPIRY
    created_by: str = "system"
    limit_key: None = None
    reverses: None = None
    hold: None = None
    expires_at: None = None
    consumed: None = None

    def model(self) -> LedgerEntry:
        """The stored entry as a ``LedgerEntry``."""
        entry = LedgerEntry(
            id=self.pk, owner_id=self.owner_id, app=self.app, operation=self.operation,
            amount=self.amount, balance_after=self.balance_after, nonce=self.nonce,
            fingerprint=self.fingerprint, metadata=self.metadata, created_at=self.created_at,
            created_by=self.created_by, seq=self.seq, prev_hash=self.prev_hash, hash=self.hash,
        )  # fmt: skip
        entry._state.adding = False
        return entry


def _expire_due(cursor, owners: list[str], now: datetime) -> list[ExpiryEntry]:
    """Post one CREDIT_EXPIRY entry per due lot of ``owners`` (whose rows are
    held), numbered, balanced and chained after each owner's newest entry."""
    cursor.execute(_DUE_SQL, {"owners": owners, "now": now})
    due = cursor.fetchall()
    if not due:
        return []
    cursor.execute(
        f"SELECT owner_id, balance, version, lot_credits, head_hash, updated_at "  # noqa: S608
        f"FROM {_BALANCE_TABLE} WHERE owner_id = ANY(%b::text[])",
        [sorted({row[1] for row in due})],
    )
    state = {row[0]: list(row[1:]) for row in cursor.fetchall()}
    prev: dict[str, str] = {}  # each owner's head before its newest entry
    entries = []
    for lot, owner_id, app, remaining, expiries in due:
        balance, version, lot_credits, head, last = state[owner_id]
        at = max(now, last + _MICROSECOND)
        entry = ExpiryEntry(
            owner_id=owner_id, app=app, amount=-remaining, balance_after=balance - remaining,
            nonce=f"expiry {lot} {expiries + 1}",
            fingerprint=entry_fingerprint(app=app, operation=CREDIT_EXPIRY, amount=-remaining),
            metadata={"lot": lot}, created_at=at, seq=version + 1, prev_hash=head,
        )  # fmt: skip
        entry.hash = chain.hash_of(entry, head)
        prev[owner_id] = head
        state[owner_id] = [
            balance - remaining, version + 1, lot_credits - remaining, entry.hash, at,
        ]  # fmt: skip
        entries.append(entry)
    entries_insert(entries)
    cursor.execute(
        f"UPDATE {_LOT_TABLE} AS l SET expired = l.expired + l.remaining, remaining = 0, "  # noqa: S608
        "expiries = l.expiries + 1 WHERE l.entry = ANY(%b::bigint[])",
        [[row[0] for row in due]],
    )
    owners_changed = sorted(state)
    cursor.execute(
        f"UPDATE {_BALANCE_TABLE} AS b SET balance = v.balance, version = v.version, "  # noqa: S608
        "lot_credits = v.lot_credits, head_hash = v.head, head_prev = v.prev, updated_at = v.at "
        "FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::text[], "
        "%b::text[], %b::timestamptz[]) AS v(owner_id, balance, version, lot_credits, head, "
        "prev, at) WHERE b.owner_id = v.owner_id",
        [
            owners_changed,
            *([state[o][i] for o in owners_changed] for i in (0, 1, 2, 3)),
            [prev[o] for o in owners_changed],
            [state[o][4] for o in owners_changed],
        ],
    )
    return entries


@dataclasses.dataclass(frozen=True)
class BalanceState:
    """An owner's balance row as locked, and the database clock then."""

    balance: int
    held: int
    lot_credits: int
    version: int
    now: datetime


def lock_balance(owner_id: str) -> BalanceState | None:
    """Lock ``owner_id``'s balance row (None when there is none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT balance, held, lot_credits, version, clock_timestamp() "  # noqa: S608
            f"FROM {_BALANCE_TABLE} WHERE owner_id = %s FOR UPDATE",
            [owner_id],
        )
        row = cursor.fetchone()
    return BalanceState(*row) if row is not None else None


@dataclasses.dataclass(frozen=True)
class Settled:
    """What ``settle_locked`` did: holds released, lots expired (false if nothing)."""

    holds: int = 0
    lots: int = 0

    def __bool__(self) -> bool:
        return bool(self.holds or self.lots)


def settle_locked(
    owner_ids: Sequence[str],
    now: datetime | None = None,
    *,
    holds: bool = True,
    lots: bool = True,
) -> Settled:
    """Release the due holds and expire the due lots of ``owner_ids``, whose
    balance rows the caller's transaction holds; ``now`` (the database clock
    by default) is the instant compared with; ``holds``/``lots`` False skip
    that half. Log lines, counts and ``entry_posted`` follow the commit."""
    owners = list(owner_ids)
    with connection.cursor() as cursor:
        if now is None:
            cursor.execute("SELECT clock_timestamp()")
            now = cursor.fetchone()[0]
        released: list[tuple] = []
        expired: list[ExpiryEntry] = []
        if holds:
            cursor.execute(_RELEASE_SQL, {"owners": owners, "now": now})
            released = cursor.fetchall()
        if lots:
            expired = _expire_due(cursor, owners, now)
    if released or expired:
        transaction.on_commit(lambda: _settled(released, expired), robust=True)
    return Settled(holds=len(released), lots=len(expired))


def due_holds_sweep(*, limit: int = 500) -> int:
    """Release due holds of up to ``limit`` owners (the oldest due first).
    Returns how many were released; 0 when none was due."""
    return _sweep(
        f"SELECT DISTINCT owner_id FROM (SELECT owner_id FROM {_HOLD_TABLE} "  # noqa: S608
        f"WHERE status = '{HoldStatus.PENDING}' AND expires_at <= statement_timestamp() "
        "ORDER BY expires_at LIMIT %s) AS due",
        limit,
    ).holds


def due_lots_sweep(*, limit: int = 2000) -> int:
    """Expire due lots of the owners of up to ``limit`` of them (the oldest
    due first). Returns how many lots expired; 0 when none was due."""
    return _sweep(
        f"SELECT DISTINCT owner_id FROM (SELECT owner_id FROM {_LOT_TABLE} "  # noqa: S608
        "WHERE remaining > 0 AND expires_at <= statement_timestamp() "
        "ORDER BY expires_at LIMIT %s) AS due",
        limit,
    ).lots


def _sweep(owners_sql: str, limit: int) -> Settled:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(owners_sql, [limit])
            owners = sorted(row[0] for row in cursor.fetchall())
            if not owners:
                return Settled()
            cursor.execute(
                f"SELECT owner_id FROM {_BALANCE_TABLE} WHERE owner_id = ANY(%b::text[]) "  # noqa: S608
                "ORDER BY owner_id FOR UPDATE",
                [owners],
            )
        return settle_locked(owners)


def _settled(released: list[tuple], expired: list[ExpiryEntry]) -> None:
    for hold_id, owner_id, app, operation, amount in released:
        metrics.hold_resolved(app=app, outcome=HoldStatus.EXPIRED)
        decision_log.info(
            "hold.expired",
            extra={
                "outcome": "hold_expired", "hold_id": hold_id, "owner_id": owner_id, "app": app,
                "operation": operation, "amount": amount, "actor": "system",
            },
        )  # fmt: skip
    # One decision line per owner and sweep (the entries are the record of
    # each lot); counts per app, entry_posted per entry.
    per_owner: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    receivers = entry_posted.has_listeners(LedgerEntry)
    for entry in expired:
        per_owner.setdefault((entry.owner_id, entry.app), []).append(
            (entry.pk, entry.metadata["lot"], entry.amount)
        )
        if not receivers:
            continue
        for receiver, error in entry_posted.send_robust(sender=LedgerEntry, entry=entry.model()):
            if isinstance(error, Exception):
                logger.error(
                    "entry_posted receiver %r failed", receiver, exc_info=(type(error), error, None)
                )
    per_app: dict[str, list[int]] = {}
    for (owner_id, app), parts in per_owner.items():
        totals = per_app.setdefault(app, [0, 0])
        totals[0] += len(parts)
        totals[1] -= sum(amount for _, _, amount in parts)
        decision_log.info(
            "ledger.expired",
            extra={
                "outcome": "expired", "owner_id": owner_id, "app": app,
                "operation": CREDIT_EXPIRY, "amount": sum(amount for _, _, amount in parts),
                "entry_ids": [pk for pk, _, _ in parts], "lots": [lot for _, lot, _ in parts],
                "actor": "system",
            },
        )  # fmt: skip
    for app, (entries, credits) in per_app.items():
        metrics.credits_expired(app=app, entries=entries, amount=credits)


def sweep_lag_seconds() -> float:
    """How long the oldest lot past its expiry has waited for its expiry
    entry (0 when none is waiting)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce(extract(epoch FROM clock_timestamp() - min(expires_at)), 0) "  # noqa: S608
            f"FROM {_LOT_TABLE} WHERE remaining > 0 AND expires_at <= statement_timestamp()"
        )
        return float(cursor.fetchone()[0])
