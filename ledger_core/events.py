"""The event feed: everything the ledger did, in one fixed order, exactly once.

Design decision: the ledger is its own outbox. An entry is its own event
(``entry.posted``, reversals and expiries included); a hold's changes are rows
of ``HoldEvent`` (``hold.placed``, ``hold.captured``, ``hold.voided``,
``hold.expired``). Every such row records the id of the transaction that
stored it (``xid``, set by PostgreSQL). Ids are handed out when transactions
start, and transactions commit in any order, so "rows after the last id I
saw" loses rows that commit late. The feed therefore shows only rows whose
transaction id is below the **watermark**, the oldest transaction still
running (``pg_snapshot_xmin(pg_current_snapshot())``): every transaction
below it has ended, so no row can appear there later. Rows are ordered by
(xid, source, id), the cursor is the last position handed out, and a consumer
paging from any cursor sees every committed event once, in that order. The
price: a long transaction anywhere in the cluster holds the feed back until
it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db import connection

from .exceptions import CursorAhead
from .models import HoldEvent, LedgerEntry

ENTRY_POSTED = "entry.posted"
HOLD_EVENT_TYPES = ("hold.placed", "hold.captured", "hold.voided", "hold.expired")
EVENT_TYPES = (ENTRY_POSTED, *HOLD_EVENT_TYPES)
MAX_LIMIT = 1000

_ENTRY, _HOLD = 0, 1  # sources, in the order their rows of one transaction come
_END = 2**62
_CURSOR_RE = re.compile(r"\A([0-9]{1,19})\.([01])\.([0-9]{1,19})\Z")


@dataclasses.dataclass(frozen=True, order=True)
class Cursor:
    """A position in the feed: after the row ``id`` of ``source`` in transaction ``xid``."""

    xid: int = 0
    source: int = 0
    id: int = 0

    def __str__(self) -> str:
        return f"{self.xid}.{self.source}.{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """The cursor ``text`` names, or None if it is not one."""
        match = _CURSOR_RE.match(text)
        if match is None:
            return None
        return cls(*(int(part) for part in match.groups()))


@dataclasses.dataclass(frozen=True)
class Event:
    """One event; ``data`` is the entry (a ``LedgerEntry``) or the hold (a dict)."""

    position: Cursor
    type: str
    created_at: datetime
    app: str
    owner_id: str
    data: Any

    @property
    def id(self) -> str:
        return str(self.position)


_WAIT_LOCK_SPACE = 0x4C46  # advisory lock keys: (this, long-poll slot)


@contextlib.contextmanager
def waiting_slot(slots: int) -> Iterator[bool]:
    """One of ``slots`` long-poll places shared by every worker of the site
    (PostgreSQL session advisory locks, so a killed worker's place is freed
    with its connection): yields whether one was free, and frees it after."""
    taken = None
    with connection.cursor() as cursor:
        for slot in range(slots):
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_WAIT_LOCK_SPACE, slot])
            if cursor.fetchone()[0]:
                taken = slot
                break
    try:
        yield taken is not None
    finally:
        if taken is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_WAIT_LOCK_SPACE, taken])


def _bound(after: Cursor, source: int) -> tuple[int, int]:
    """The (xid, id) a row of ``source`` must be after to come after ``after``."""
    if after.source == source:
        return after.xid, after.id
    return (after.xid, -1) if after.source < source else (after.xid, _END)


def event_page(
    *,
    after: Cursor,
    limit: int,
    app: str | None = None,
    owner_id: str | None = None,
    types: tuple[str, ...] = EVENT_TYPES,
) -> tuple[list[Event], Cursor]:
    """Up to ``limit`` events after ``after`` (below the watermark), and the
    cursor to continue from: the last event's, or, when there were fewer, the
    watermark's (nothing filtered out below it can come back). A cursor at or
    past the snapshot's ``xmax`` (every transaction below it has ended) was
    not handed out by this database: ``CursorAhead``."""
    filters, params = "", {"limit": limit}
    if app:
        filters += " AND app = %(app)s"
        params["app"] = app
    if owner_id:
        filters += " AND owner_id = %(owner)s"
        params["owner"] = owner_id
    parts = []
    if ENTRY_POSTED in types:
        params["e_xid"], params["e_id"] = _bound(after, _ENTRY)
        parts.append(
            f"(SELECT xid, {_ENTRY} AS source, id FROM {LedgerEntry._meta.db_table} "  # noqa: S608
            f"WHERE (xid, id) > (%(e_xid)s, %(e_id)s) AND xid < (SELECT xmin FROM w) {filters} "
            "ORDER BY xid, id LIMIT %(limit)s)"
        )
    hold_types = [t for t in types if t in HOLD_EVENT_TYPES]
    if hold_types:
        params["h_xid"], params["h_id"] = _bound(after, _HOLD)
        params["types"] = hold_types
        parts.append(
            f"(SELECT xid, {_HOLD} AS source, id FROM {HoldEvent._meta.db_table} "  # noqa: S608
            f"WHERE (xid, id) > (%(h_xid)s, %(h_id)s) AND xid < (SELECT xmin FROM w) {filters} "
            "AND type = ANY(%(types)s) ORDER BY xid, id LIMIT %(limit)s)"
        )
    with connection.cursor() as cursor:
        # The watermark and the rows come from one statement, one snapshot: a
        # watermark read later could pass a transaction whose rows this
        # snapshot did not show. With no rows, the one row has NULLs.
        cursor.execute(
            "WITH w AS (SELECT pg_snapshot_xmin(s)::text::bigint AS xmin, "  # noqa: S608
            "pg_snapshot_xmax(s)::text::bigint AS xmax FROM pg_current_snapshot() AS s) "
            "SELECT w.xmin, w.xmax, u.xid, u.source, u.id FROM w LEFT JOIN ("
            + (" UNION ALL ".join(parts) or "SELECT 0 AS xid, 0 AS source, 0 AS id WHERE false")
            + ") AS u ON true ORDER BY 3, 4, 5 LIMIT %(limit)s",
            params,
        )
        rows = cursor.fetchall()
    watermark, next_xid = rows[0][0], rows[0][1]
    if after.xid >= next_xid:
        # Every cursor handed out is below a watermark (an xmin), and no xmin
        # or xmax of a later snapshot is lower.
        raise CursorAhead()
    positions = [Cursor(xid, source, pk) for _, _, xid, source, pk in rows if xid is not None]
    events = _load(positions)
    if len(events) == limit:
        return events, events[-1].position
    # Everything below the watermark has been seen (or filtered out).
    return events, max(after, Cursor(watermark - 1, _HOLD, _END))


def _load(positions: list[Cursor]) -> list[Event]:
    entries = LedgerEntry.objects.in_bulk([p.id for p in positions if p.source == _ENTRY])
    holds = HoldEvent.objects.in_bulk([p.id for p in positions if p.source == _HOLD])
    events = []
    for position in positions:
        if position.source == _ENTRY:
            entry = entries[position.id]
            events.append(Event(position, ENTRY_POSTED, entry.created_at, entry.app,
                                entry.owner_id, entry))  # fmt: skip
        else:
            event = holds[position.id]
            events.append(Event(position, event.type, event.created_at, event.app,
                                event.owner_id, event.data))  # fmt: skip
    return events
