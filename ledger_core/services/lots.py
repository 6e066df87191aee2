"""Credit lots: which credits a debit (or a hold) takes, and keeping the lots' rows.

Design decision: only credits that expire are tracked, one ``CreditLot`` row
per such credit; everything else in a balance is one pool of non-expiring
credits, consumed last. A debit takes from the lots with the soonest expiry
first (the oldest entry first on ties), then from the pool, so the credits
that would be lost soonest are used first. Plans are made under the owner's
balance-row lock, after due lots were expired at the same instant, so no plan
takes an expired credit and no two plans take the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from ..models import CreditLot

_LOT_TABLE = CreditLot._meta.db_table
_FIRST_PAGE = 8
_PAGE = 200


def lots_plan(
    owner_id: str, need: int, *, now: datetime, first: int | None = None
) -> tuple[tuple[tuple[int, int], ...], bool]:
    """What ``need`` credits take from ``owner_id``'s lots, in consumption
    order: ``((lot, amount), ...)``, at most ``need`` in all (the rest comes
    from non-expiring credits); ``first`` is taken before any other lot. Lots
    expiring at or before ``now`` are left out, and the second value says
    whether there was one (it sorts first): the caller must settle it before
    trusting the balance. The caller holds the owner's balance row."""
    plan: list[tuple[int, int]] = []
    due = False
    with connection.cursor() as cursor:
        if first is not None:
            cursor.execute(
                f"SELECT remaining, expires_at FROM {_LOT_TABLE} "  # noqa: S608
                "WHERE entry = %(first)s AND owner_id = %(owner)s AND remaining > 0",
                {"first": first, "owner": owner_id},
            )
            row = cursor.fetchone()
            if row is not None and row[1] <= now:
                due = True  # the caller settles it, like any lot past its expiry
            elif row is not None:
                plan.append((first, min(row[0], need)))
                need -= plan[-1][1]
        after: tuple = ()
        page = _FIRST_PAGE
        while need > 0:
            keyset = "AND (expires_at, entry) > (%(after_at)s, %(after_entry)s)" if after else ""
            cursor.execute(
                f"SELECT entry, remaining, expires_at FROM {_LOT_TABLE} "  # noqa: S608
                f"WHERE owner_id = %(owner)s AND remaining > 0 "
                f"AND entry IS DISTINCT FROM %(first)s {keyset} "
                "ORDER BY expires_at, entry LIMIT %(page)s",
                {
                    "owner": owner_id, "first": first, "page": page,
                    "after_at": after[0] if after else None,
                    "after_entry": after[1] if after else None,
                },
            )  # fmt: skip
            rows = cursor.fetchall()
            for lot, remaining, expires_at in rows:
                after = (expires_at, lot)
                if expires_at <= now:
                    due = True
                    continue
                take = min(remaining, need)
                plan.append((lot, take))
                need -= take
                if need == 0:
                    break
            if len(rows) < page:
                break
            page = _PAGE
    return tuple(plan), due


# Changes ``(lot, remaining delta, consumed delta)`` to an owner's lots, one
# row per lot; its parameters are ``lots_move_params``. The single post runs
# it inside its own statement.
LOTS_MOVE_SQL = f"""
UPDATE {_LOT_TABLE} AS l SET remaining = l.remaining + m.remaining,
    consumed = l.consumed + m.consumed
FROM unnest(%(move_lots)b::bigint[], %(move_remaining)b::bigint[], %(move_consumed)b::bigint[])
    AS m(entry, remaining, consumed)
WHERE l.entry = m.entry AND l.owner_id = %(owner)s::text"""  # noqa: S608


def lots_move_params(owner_id: str, moves: Sequence[tuple[int, int, int]]) -> dict[str, Any]:
    """``LOTS_MOVE_SQL``'s parameters: ``moves`` summed per lot, in lot order."""
    total: dict[int, list[int]] = {}
    for lot, remaining, consumed in moves:
        sums = total.setdefault(lot, [0, 0])
        sums[0] += remaining
        sums[1] += consumed
    lots = sorted(total)
    return {
        "owner": owner_id,
        "move_lots": lots,
        "move_remaining": [total[lot][0] for lot in lots],
        "move_consumed": [total[lot][1] for lot in lots],
    }


def lots_move(owner_id: str, moves: Sequence[tuple[int, int, int]]) -> None:
    """Apply ``(lot, remaining delta, consumed delta)`` to ``owner_id``'s lots."""
    with connection.cursor() as cursor:
        cursor.execute(LOTS_MOVE_SQL, lots_move_params(owner_id, moves))


def parts_json(parts: Sequence[tuple[int, int]]) -> list[dict[str, int]]:
    """``((lot, amount), ...)`` as entries and holds store it."""
    return [{"entry": lot, "amount": amount} for lot, amount in parts]


def parts_of(stored: list[dict[str, int]] | None) -> tuple[tuple[int, int], ...]:
    """What ``parts_json`` stored, back as ``((lot, amount), ...)``."""
    return tuple((part["entry"], part["amount"]) for part in stored or ())
