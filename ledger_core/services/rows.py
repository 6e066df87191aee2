"""Entries as stored: the payload fingerprint, and storing many at once
(batches, expiry sweeps).

Design decision: set-based statements here and in the batch, lot and expiry
services pass their columns as arrays bound in binary (psycopg's ``%b``
placeholder). In text form psycopg quotes every element in Python, which was
a sixth of a batch's instructions (docs/performance.md); the binary form
copies them. Both server-side and client-side binding accept it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import connection

from ..models import LedgerEntry

_CHUNK = 5000


def entry_fingerprint(*, app: str, operation: str, amount: int) -> str:
    """The payload identity a nonce is bound to: (app, operation, amount)."""
    return hashlib.sha256(f"{app}\x1f{operation}\x1f{amount}".encode()).hexdigest()


def entries_insert(rows: list[Any]) -> None:
    """Insert new entries (``LedgerEntry`` objects, or rows with the same
    attributes), setting their ids (one statement per chunk)."""
    table = LedgerEntry._meta.db_table
    sql = (
        f"INSERT INTO {table} (owner_id, app, operation, amount, balance_after, nonce, "  # noqa: S608
        "fingerprint, limit_key, metadata, created_at, created_by, seq, expires_at, consumed, "
        "prev_hash, hash) "
        "SELECT o, a, op, am, ba, n, f, lk, md::jsonb, ca, cb, sq, ea, co::jsonb, ph, h "
        "FROM unnest("
        "%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], "
        "%b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[], "
        "%b::timestamptz[], %b::text[], %b::text[], %b::text[]"
        ") AS t(o, a, op, am, ba, n, f, lk, md, ca, cb, sq, ea, co, ph, h) RETURNING id"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            cursor.execute(
                sql,
                [
                    [r.owner_id for r in chunk],
                    [r.app for r in chunk],
                    [r.operation for r in chunk],
                    [r.amount for r in chunk],
                    [r.balance_after for r in chunk],
                    [r.nonce for r in chunk],
                    [r.fingerprint for r in chunk],
                    [r.limit_key for r in chunk],
                    [None if r.metadata is None else json.dumps(r.metadata) for r in chunk],
                    [r.created_at for r in chunk],
                    [r.created_by for r in chunk],
                    [r.seq for r in chunk],
                    [r.expires_at for r in chunk],
                    [None if r.consumed is None else json.dumps(r.consumed) for r in chunk],
                    [r.prev_hash for r in chunk],
                    [r.hash for r in chunk],
                ],
            )
            # Ids come from one sequence in insertion order, which is the
            # order of the unnest() rows.
            ids = sorted(row[0] for row in cursor.fetchall())
            for row, pk in zip(chunk, ids, strict=True):
                row.pk = pk
                if isinstance(row, LedgerEntry):
                    row._state.adding = False
