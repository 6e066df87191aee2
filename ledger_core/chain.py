"""The per-owner hash chain: the canonical bytes of an entry, and its hash.

Design decision: every entry stores ``hash = SHA-256(prev_hash || canonical
bytes)``, where ``prev_hash`` is the hash of the same owner's previous entry
(64 zeros for the first), so one owner's history can be checked alone (by
``verify_ledger``, or by anyone from the API's JSON with the verifier in
docs/hash-chain.md). The canonical form is a sequence of fields, each either
``0x00`` (null) or ``0x01``, a 4-byte big-endian length and UTF-8 text, in
this order:

    seq, balance_after, created_at,                  (set when the post applies)
    owner_id, app, operation, amount, nonce, reverses, hold, expires_at,
    metadata, consumed

Integers are decimal text; instants are UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``;
``metadata`` and ``consumed`` are canonical JSON (sorted keys, no spaces,
non-ASCII as is, numbers as normalised decimals such as ``1E+2`` for 100 and
100.0, so that a value reads the same before and after PostgreSQL stores it).
The first three fields are computed by PostgreSQL inside the post's own
statement (``ledger_hash_field`` and ``ledger_hash_time``, migration 0008);
the rest is computed here once and passed as one parameter.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

GENESIS = "0" * 64


def field(value: object) -> bytes:
    """One field of the canonical form (``None`` is null)."""
    if value is None:
        return b"\x00"
    data = str(value).encode()
    return b"\x01" + len(data).to_bytes(4, "big") + data


def instant(value: datetime | None) -> str | None:
    """An instant as the canonical form writes it."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str | None:
    """``value`` as canonical JSON: keys sorted by code point, no spaces,
    strings as ``json.dumps`` writes them without ASCII escaping, numbers as
    normalised decimals (``str(Decimal(...).normalize())``, 0 for any zero).
    None stays None."""
    if value is None:
        return None
    return _dump(value)


def _dump(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return str(number.normalize()) if number else "0"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dump(item) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_dump(key)}:{_dump(item)}" for key, item in items) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def static_part(
    *,
    owner_id: str,
    app: str,
    operation: str,
    amount: int,
    nonce: str,
    reverses: int | None,
    hold: int | None,
    expires_at: datetime | None,
    metadata: Any,
    consumed: Any,
) -> bytes:
    """The fields known before the post applies, in canonical order."""
    return b"".join(
        field(value)
        for value in (
            owner_id, app, operation, amount, nonce, reverses, hold, instant(expires_at),
            canonical_json(metadata), canonical_json(consumed),
        )
    )  # fmt: skip


def entry_hash(
    prev_hash: str, *, seq: int, balance_after: int, created_at: datetime, static: bytes
) -> str:
    """The hash of an entry after ``prev_hash``."""
    digest = hashlib.sha256(bytes.fromhex(prev_hash))
    digest.update(field(seq) + field(balance_after) + field(instant(created_at)) + static)
    return digest.hexdigest()


def hash_of(entry: Any, prev_hash: str) -> str:
    """The hash a stored entry (a ``LedgerEntry``) should have after ``prev_hash``."""
    return entry_hash(
        prev_hash,
        seq=entry.seq,
        balance_after=entry.balance_after,
        created_at=entry.created_at,
        static=static_part(
            owner_id=entry.owner_id, app=entry.app, operation=entry.operation,
            amount=entry.amount, nonce=entry.nonce, reverses=entry.reverses, hold=entry.hold,
            expires_at=entry.expires_at, metadata=entry.metadata, consumed=entry.consumed,
        ),
    )  # fmt: skip
