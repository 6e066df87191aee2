"""Reads from the ledger: balances and entry history.

Design decision: the balance comes from the materialised ``Balance`` row (one
primary-key lookup whatever the history length); history is keyset-paginated
on ``(owner_id, id)`` so deep pages cost the same as the first.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from django.db.models import QuerySet

from .models import Balance, LedgerEntry


@dataclasses.dataclass(frozen=True)
class BalanceView:
    """An owner's balance; an owner without entries has balance 0, version 0."""

    owner_id: str
    balance: int
    version: int
    updated_at: datetime | None


def balance_get(*, owner_id: str) -> BalanceView:
    """The current balance of ``owner_id`` (0 for an unknown owner)."""
    row = (
        Balance.objects.filter(owner_id=owner_id)
        .values_list("balance", "version", "updated_at")
        .first()
    )
    if row is None:
        return BalanceView(owner_id=owner_id, balance=0, version=0, updated_at=None)
    return BalanceView(owner_id=owner_id, balance=row[0], version=row[1], updated_at=row[2])


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
    qs = LedgerEntry.objects.filter(owner_id=owner_id)
    if operation:
        qs = qs.filter(operation=operation)
    if app:
        qs = qs.filter(app=app)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-id")
