"""Releasing holds past their expiry: giving their credits back to ``available``.

Design decision: an expired hold stops counting the moment ``expires_at``
passes, without any job: reads subtract only unexpired holds, and captures
compare with the database clock. ``Balance.held`` still counts it until it is
released here, which only makes a debit's one-statement check stricter; a
debit (or a hold) that this refuses releases the owner's due holds and tries
once more. ``manage.py expire_holds`` releases them for all owners. Every
release first holds the owners' balance rows (in owner order, as every writer
does), then marks the holds and lowers ``held`` in one statement, so a hold is
released at most once however many run at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import connection, transaction

from .. import metrics
from ..models import Balance, HoldStatus, LedgerHold

decision_log = logging.getLogger("ledger_core.decisions")

_BALANCE_TABLE = Balance._meta.db_table
_HOLD_TABLE = LedgerHold._meta.db_table

_RELEASE_SQL = f"""
WITH due AS (
    UPDATE {_HOLD_TABLE} SET status = '{HoldStatus.EXPIRED}', resolved_at = clock_timestamp(),
        resolved_by = 'system'
    WHERE owner_id = ANY(%(owners)s::text[]) AND status = '{HoldStatus.PENDING}'
        AND expires_at <= clock_timestamp()
    RETURNING id, owner_id, app, operation, amount
), released AS (
    UPDATE {_BALANCE_TABLE} AS b SET held = b.held + t.total
    FROM (SELECT owner_id, sum(amount) AS total FROM due GROUP BY owner_id) AS t
    WHERE b.owner_id = t.owner_id
)
SELECT id, owner_id, app, operation, amount FROM due
"""  # noqa: S608 (table names are model constants, values are parameters)


def due_holds_release_locked(owner_ids: Sequence[str]) -> int:
    """Release the due holds of ``owner_ids``, whose balance rows the caller's
    transaction holds. Returns how many were released; their log lines and
    counts follow the commit."""
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE_SQL, {"owners": list(owner_ids)})
        released = cursor.fetchall()
    if released:
        transaction.on_commit(lambda: _released(released), robust=True)
    return len(released)


def due_holds_release(owner_id: str) -> bool:
    """Release ``owner_id``'s holds past their expiry. True when the owner has
    holds (``held`` was not 0): a debit refused before may fit now, whether
    this call or a concurrent one released them."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT held FROM {_BALANCE_TABLE} WHERE owner_id = %s FOR UPDATE",  # noqa: S608
                [owner_id],
            )
            row = cursor.fetchone()
        if row is None or row[0] == 0:
            return False
        due_holds_release_locked([owner_id])
        return True


def due_holds_sweep(*, limit: int = 500) -> int:
    """Release due holds of up to ``limit`` owners (the oldest due first).
    Returns how many holds were released; 0 when none is left."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT owner_id FROM (SELECT owner_id FROM {_HOLD_TABLE} "  # noqa: S608
                f"WHERE status = '{HoldStatus.PENDING}' AND expires_at <= clock_timestamp() "
                "ORDER BY expires_at LIMIT %s) AS due",
                [limit],
            )
            owners = sorted(row[0] for row in cursor.fetchall())
            if not owners:
                return 0
            cursor.execute(
                f"SELECT owner_id FROM {_BALANCE_TABLE} WHERE owner_id = ANY(%s::text[]) "  # noqa: S608
                "ORDER BY owner_id FOR UPDATE",
                [owners],
            )
        return due_holds_release_locked(owners)


def _released(rows: list[tuple]) -> None:
    for hold_id, owner_id, app, operation, amount in rows:
        metrics.hold_resolved(app=app, outcome=HoldStatus.EXPIRED)
        decision_log.info(
            "hold.expired",
            extra={
                "outcome": "hold_expired",
                "hold_id": hold_id,
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "amount": amount,
                "actor": "system",
            },
        )
