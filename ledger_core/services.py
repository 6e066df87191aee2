"""Writes to the ledger. Every credit movement goes through ``entry_post``.

Design decision: a post is one short transaction that serialises per owner on
the owner's ``Balance`` row. Credits use an upsert (so the first post for a new
owner cannot race), debits a conditional ``UPDATE ... WHERE balance + x >= 0``;
either returns the new balance, and the entry is inserted with it as
``balance_after``. Idempotency and limits are enforced by unique keys: the
fast path does not look the nonce up first; a unique violation (or a refused
debit) is followed by a look-up that turns it into a replay, a conflict or a
limit refusal. All of this runs inside ``transaction.atomic()`` (a savepoint
when the caller already has a transaction), so a consumer app can create its
own rows and the entry in one commit; side effects wait for ``on_commit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from . import metrics
from .actors import Actor
from .cache import balance_cache
from .exceptions import (
    Forbidden,
    InsufficientBalance,
    InvalidEntry,
    LedgerError,
    LimitReached,
    NonceConflict,
    NonceInFlight,
    UnknownOperation,
)
from .models import Balance, LedgerEntry
from .operations import OperationPolicy, Role, registry
from .signals import entry_posted
from .types import BalanceView
from .validation import metadata_validate, nonce_validate, owner_id_validate

logger = logging.getLogger("ledger_core.services")
# One line per ledger decision (posted, replayed, refused) with owner, app,
# operation, amount, nonce and outcome as fields.
decision_log = logging.getLogger("ledger_core.decisions")

_BALANCE_TABLE = Balance._meta.db_table

_CREDIT_SQL = f"""
INSERT INTO {_BALANCE_TABLE} (owner_id, balance, version, updated_at)
VALUES (%s, %s, 1, %s)
ON CONFLICT (owner_id) DO UPDATE SET
    balance = {_BALANCE_TABLE}.balance + EXCLUDED.balance,
    version = {_BALANCE_TABLE}.version + 1,
    updated_at = EXCLUDED.updated_at
RETURNING balance, version
"""  # noqa: S608 (table name is a model constant, values are parameters)

_DEBIT_SQL = f"""
UPDATE {_BALANCE_TABLE}
SET balance = balance + %s, version = version + 1, updated_at = %s
WHERE owner_id = %s AND balance + %s >= 0
RETURNING balance, version
"""  # noqa: S608


@dataclasses.dataclass(frozen=True)
class PostResult:
    """What ``entry_post`` did: the entry, and whether it was a replay."""

    entry: LedgerEntry
    replayed: bool = False


def entry_fingerprint(*, app: str, operation: str, amount: int) -> str:
    """The payload identity a nonce is bound to: (app, operation, amount)."""
    return hashlib.sha256(f"{app}\x1f{operation}\x1f{amount}".encode()).hexdigest()


def max_entry_amount() -> int:
    return int(settings.LEDGER_MAX_ENTRY_AMOUNT)


def operation_policy_get(*, app: str, operation: str) -> OperationPolicy:
    """The policy of ``operation`` in ``app``; ``UnknownOperation`` if it has none."""
    policy = registry.policy(app, operation) if isinstance(operation, str) else None
    if policy is None or policy.amount is None:
        allowed = [op for op in registry.operations_for(app) if registry.policy(app, op)]
        raise UnknownOperation(
            f"Unknown operation {operation!r} for app {app!r}.",
            field="operation",
            allowed=allowed,
        )
    return policy


def _role_for(actor: Actor, owner_id: str, policy: OperationPolicy) -> Role:
    if actor.is_system:
        return "system"
    if actor.can_post_any and "manager" in policy.posters:
        return "manager"
    if actor.owner_id == owner_id and "owner" in policy.posters:
        return "owner"
    if actor.owner_id != owner_id and not actor.can_post_any:
        raise Forbidden("You may only move credits on your own ledger.")
    raise Forbidden("You may not post this operation.")


def _amount_resolve(policy: OperationPolicy, amount: int | None, role: Role) -> int:
    configured = policy.amount
    assert configured is not None
    if amount is None:
        return configured
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidEntry("amount must be an integer.", field="amount")
    if role == "owner":
        if amount != configured:
            raise InvalidEntry(
                f"amount must be {configured} for this operation (or omitted).",
                field="amount",
                expected=configured,
            )
        return amount
    # Managers and the system may post grants of any size, in the operation's
    # direction and within the site's cap.
    if configured == 0:
        if amount != 0:
            raise InvalidEntry("amount must be 0 for this operation.", field="amount")
        return 0
    if amount == 0 or (amount > 0) != (configured > 0):
        sign = "positive" if configured > 0 else "negative"
        raise InvalidEntry(f"amount must be a non-zero {sign} integer.", field="amount")
    cap = max_entry_amount()
    if abs(amount) > cap:
        raise InvalidEntry(f"amount must be at most {cap} in absolute value.", field="amount")
    return amount


def next_utc_midnight(now: datetime) -> datetime:
    """The start of the UTC day after ``now`` (when a daily limit frees up)."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def _limit_key(policy: OperationPolicy, operation: str, now: datetime) -> str | None:
    if policy.limit == "daily":
        return f"{operation}:{now.astimezone(UTC).date().isoformat()}"
    if policy.limit == "once":
        return operation
    return None


def _limit_refusal(policy: OperationPolicy, operation: str, now: datetime) -> LimitReached:
    if policy.limit == "daily":
        return LimitReached(
            f"{operation} can be posted once per UTC day.",
            next_claim_at=next_utc_midnight(now).isoformat().replace("+00:00", "Z"),
        )
    return LimitReached(f"{operation} can be posted only once per owner.")


def _replay_or_conflict(existing: LedgerEntry, fingerprint: str) -> PostResult:
    if existing.fingerprint != fingerprint:
        raise NonceConflict(
            "This nonce was already used for a different operation, amount or app.",
            entry_id=existing.pk,
        )
    return PostResult(entry=existing, replayed=True)


def _entry_by_nonce(owner_id: str, nonce: str) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(owner_id=owner_id, nonce=nonce).first()


def _apply_to_balance(owner_id: str, amount: int, now: datetime) -> tuple[int, int] | None:
    with connection.cursor() as cursor:
        if amount >= 0:
            cursor.execute(_CREDIT_SQL, [owner_id, amount, now])
        else:
            cursor.execute(_DEBIT_SQL, [amount, now, owner_id, amount])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


class _Refused(Exception):
    """Internal: leave the atomic block (rolling it back) for an insufficient balance."""


def entry_post(
    *,
    owner_id: str,
    operation: str,
    nonce: str,
    app: str,
    actor: Actor,
    amount: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> PostResult:
    """Post ``operation`` to ``owner_id``'s ledger as ``actor``, at most once per nonce.

    Returns the new entry, or the original one (``replayed=True``) when the
    same owner, nonce and payload were posted before. Raises
    ``InvalidEntry``/``UnknownOperation`` (bad input), ``Forbidden``,
    ``InsufficientBalance``, ``LimitReached``, ``NonceConflict`` or
    ``NonceInFlight``; nothing is stored when it raises. Works inside a
    caller's ``transaction.atomic()``: the entry then commits with it.
    """
    started = time.perf_counter()
    try:
        result = _post(
            owner_id=owner_id,
            operation=operation,
            nonce=nonce,
            app=app,
            actor=actor,
            amount=amount,
            metadata=metadata,
            started=started,
        )
    except LedgerError as exc:
        metrics.entry_rejected(app=app, operation=operation, reason=exc.code)
        decision_log.info(
            "ledger.refused",
            extra={
                "outcome": "refused",
                "reason": exc.code,
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "amount": amount,
                "nonce": nonce,
                "actor": actor.name,
            },
        )
        raise
    if result.replayed:
        metrics.entry_replayed(app=app, operation=operation)
        _log_entry("replayed", result.entry, actor)
    return result


def _log_entry(outcome: str, entry: LedgerEntry, actor: Actor) -> None:
    decision_log.info(
        f"ledger.{outcome}",
        extra={
            "outcome": outcome,
            "owner_id": entry.owner_id,
            "app": entry.app,
            "operation": entry.operation,
            "amount": entry.amount,
            "balance_after": entry.balance_after,
            "nonce": entry.nonce,
            "entry_id": entry.pk,
            "actor": actor.name,
        },
    )


def _post(
    *,
    owner_id: str,
    operation: str,
    nonce: str,
    app: str,
    actor: Actor,
    amount: int | None,
    metadata: dict[str, Any] | None,
    started: float,
) -> PostResult:
    owner_id_validate(owner_id)
    nonce_validate(nonce)
    metadata_validate(metadata)
    policy = operation_policy_get(app=app, operation=operation)
    role = _role_for(actor, owner_id, policy)
    resolved = _amount_resolve(policy, amount, role)
    now = timezone.now()
    limit_key = _limit_key(policy, operation, now)
    fingerprint = entry_fingerprint(app=app, operation=operation, amount=resolved)

    try:
        with transaction.atomic():
            applied = _apply_to_balance(owner_id, resolved, now)
            if applied is None:
                raise _Refused
            balance_after, version = applied
            entry = LedgerEntry.objects.create(
                owner_id=owner_id,
                app=app,
                operation=operation,
                amount=resolved,
                balance_after=balance_after,
                nonce=nonce,
                fingerprint=fingerprint,
                limit_key=limit_key,
                metadata=metadata,
                created_at=now,
                created_by=actor.name,
            )
    except _Refused:
        existing = _entry_by_nonce(owner_id, nonce)
        if existing is not None:
            return _replay_or_conflict(existing, fingerprint)
        current = (
            Balance.objects.filter(owner_id=owner_id).values_list("balance", flat=True).first()
        )
        raise InsufficientBalance(
            f"Balance {current or 0} does not cover {-resolved}.",
            balance=current or 0,
            required=-resolved,
        ) from None
    except IntegrityError:
        existing = _entry_by_nonce(owner_id, nonce)
        if existing is not None:
            return _replay_or_conflict(existing, fingerprint)
        if (
            limit_key is not None
            and LedgerEntry.objects.filter(owner_id=owner_id, limit_key=limit_key).exists()
        ):
            raise _limit_refusal(policy, operation, now) from None
        # The conflicting post has not committed yet (or rolled back): the
        # client may retry with the same nonce.
        raise NonceInFlight() from None

    view = BalanceView(owner_id=owner_id, balance=balance_after, version=version, updated_at=now)
    transaction.on_commit(lambda: _after_commit(entry, view, actor, started), robust=True)
    return PostResult(entry=entry)


def _after_commit(entry: LedgerEntry, view: BalanceView, actor: Actor, started: float) -> None:
    # Order matters: the cache holds the new balance before the post's
    # response can reach the client (read-your-writes, see ledger_core.cache).
    balance_cache.offer(view)
    metrics.entry_committed(
        app=entry.app,
        operation=entry.operation,
        amount=entry.amount,
        seconds=time.perf_counter() - started,
    )
    _log_entry("posted", entry, actor)
    for receiver, error in entry_posted.send_robust(sender=LedgerEntry, entry=entry):
        if isinstance(error, Exception):
            logger.error(
                "entry_posted receiver %r failed", receiver, exc_info=(type(error), error, None)
            )
