"""Reads from the ledger: balances and entry history.

Design decision: the balance comes from the balance cache when it holds one
(no SQL at all), else from the materialised ``Balance`` row (one primary-key
lookup whatever the history length), which then refills the cache through its
versioned compare-and-set (see ``ledger_core.cache``). History is
keyset-paginated on ``(owner_id, id)`` so deep pages cost the same as the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.db.models import QuerySet

from .cache import balance_cache
from .models import Balance, LedgerEntry
from .types import BalanceView

__all__ = ["BalanceView", "balance_get", "balance_get_uncached", "entry_list", "ledger_exists"]


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


def balance_get_uncached(*, owner_id: str) -> BalanceView:
    """The balance of ``owner_id`` as the database has it (0 for an unknown owner)."""
    row = (
        Balance.objects.filter(owner_id=owner_id)
        .values_list("balance", "version", "updated_at")
        .first()
    )
    if row is None:
        return BalanceView(owner_id=owner_id, balance=0, version=0, updated_at=None)
    return BalanceView(owner_id=owner_id, balance=row[0], version=row[1], updated_at=row[2])


def balance_get(*, owner_id: str) -> BalanceView:
    """The current balance of ``owner_id`` (0 for an unknown owner), cache first.

    Inside a transaction the database answers (it sees the transaction's own
    posts, the cache does not), and the value reaches the cache only if and
    when the transaction commits: an uncommitted balance is never shared.
    """
    if connection.in_atomic_block:
        view = balance_get_uncached(owner_id=owner_id)
        transaction.on_commit(lambda: balance_cache.offer(view), robust=True)
        return view
    cached = balance_cache.get(owner_id)
    if cached is not None:
        return cached
    view = balance_get_uncached(owner_id=owner_id)
    balance_cache.offer(view)
    return view


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
