"""Holds: credits reserved for a debit that may still fail, then captured,
voided or expired, at most once.

Design decision: a hold is a row of its own plus ``Balance.held``, the sum the
owner's pending holds reserve. Every hold change first locks the owner's
balance row (the lock every post takes), then the hold's row, so holds,
captures, voids, expiries and posts of one owner apply one at a time, and a
debit's conditional UPDATE (``balance + amount >= held``) can never spend
reserved credits. A capture is an ordinary post of the hold's operation (the
same statement, with the hold's reservation released in it), so its entry,
balance and side effects are those of any post. Expiry needs no job: see
``expiry``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import metrics
from ..actors import Actor
from ..chain import instant
from ..exceptions import (
    Forbidden,
    HoldExpired,
    HoldNotFound,
    HoldNotPending,
    InvalidEntry,
    LedgerError,
    NonceConflict,
    UnknownOperation,
)
from ..models import Balance, HoldEvent, HoldStatus, LedgerEntry, LedgerHold
from ..operations import MANAGER, OperationPolicy, registry
from ..validation import nonce_validate, owner_id_validate
from .expiry import lock_balance, settle_locked
from .lots import lots_move, lots_plan, parts_json, parts_of
from .posting import (
    PreparedEntry,
    _amount_resolve,
    _post,
    _record_refusal,
    _role_for,
    entry_fingerprint,
    insufficient,
    operation_policy_get,
    write_transaction,
)

decision_log = logging.getLogger("ledger_core.decisions")

_BALANCE_TABLE = Balance._meta.db_table

#: ``expires_in`` bounds and default, in seconds.
HOLD_EXPIRES_MIN = 1
HOLD_EXPIRES_MAX = 7 * 24 * 3600
HOLD_EXPIRES_DEFAULT = 900

#: Fields of a hold that the API shows and the decision log line carries.
HOLD_FIELDS = (
    "id", "owner_id", "app", "operation", "amount", "status", "expires_at", "nonce",
    "created_at", "resolved_at", "entry",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HoldResult:
    """A hold after a request, and whether the request changed nothing (a replay)."""

    hold: LedgerHold
    replayed: bool = False


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """A captured hold and the entry its capture posted."""

    hold: LedgerHold
    entry: LedgerEntry
    replayed: bool = False


def holdable_operations(app: str) -> list[str]:
    """The operations of ``app`` that may be held: direct debits without a limit."""
    return [
        operation
        for operation in registry.postable(app, direct=True)
        if (policy := registry.policy(app, operation)) is not None
        and policy.amount is not None
        and policy.amount < 0
        and policy.limit is None
    ]


def _holdable_policy(app: str, operation: str) -> OperationPolicy:
    policy = operation_policy_get(app=app, operation=operation, direct=True)
    assert policy.amount is not None
    if policy.amount >= 0 or policy.limit is not None:
        raise UnknownOperation(
            f"{operation} cannot be held: only debits without a limit can.",
            field="operation",
            allowed=holdable_operations(app),
        )
    return policy


def _expires_in_resolve(expires_in: object) -> int:
    if expires_in is None:
        return HOLD_EXPIRES_DEFAULT
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not HOLD_EXPIRES_MIN <= expires_in <= HOLD_EXPIRES_MAX
    ):
        raise InvalidEntry(
            f"expires_in must be an integer number of seconds, "
            f"{HOLD_EXPIRES_MIN}..{HOLD_EXPIRES_MAX}.",
            field="expires_in",
        )
    return expires_in


def _current(hold: LedgerHold, now: datetime) -> LedgerHold:
    """``hold`` with the status it has at ``now`` (expired once past ``expires_at``)."""
    if hold.status == HoldStatus.PENDING and hold.expires_at <= now:
        hold.status = HoldStatus.EXPIRED
    return hold


def hold_data(hold: LedgerHold) -> dict[str, Any]:
    """The hold's fields for its events, times in UTC with microseconds, as
    the hash chain writes them (the sweep builds the same object in SQL:
    ``expiry._RELEASE_SQL``)."""
    data: dict[str, Any] = {name: getattr(hold, name) for name in HOLD_FIELDS}
    for name in ("expires_at", "created_at", "resolved_at"):
        data[name] = instant(data[name])
    return data


def _record_event(hold: LedgerHold, outcome: str, at: datetime) -> None:
    """The hold's change as an event of the feed (in the change's transaction)."""
    HoldEvent.objects.create(
        hold=hold.pk, owner_id=hold.owner_id, app=hold.app, type=f"hold.{outcome}",
        created_at=at, data=hold_data(hold),
    )  # fmt: skip


def _log_hold(outcome: str, hold: LedgerHold, actor: Actor, **extra: Any) -> None:
    """One decision line for a hold change (and its count, unless a replay)."""
    fields: dict[str, Any] = {name: getattr(hold, name) for name in HOLD_FIELDS}
    fields["hold_id"] = fields.pop("id")
    fields["entry_id"] = fields.pop("entry")
    for name in ("expires_at", "created_at", "resolved_at"):
        if fields[name] is not None:
            fields[name] = fields[name].isoformat()
    if outcome != "replayed":
        metrics.hold_resolved(app=hold.app, outcome=outcome)
    decision_log.info(
        f"hold.{outcome}",
        extra={"outcome": f"hold_{outcome}", **fields, **extra, "actor": actor.name},
    )


class _DryRun(Exception):
    def __init__(self, result: HoldResult) -> None:
        self.result = result


def hold_place(
    *,
    owner_id: str,
    operation: str,
    nonce: str,
    app: str,
    actor: Actor,
    amount: int | None = None,
    expires_in: int | None = None,
    dry_run: bool = False,
) -> HoldResult:
    """Reserve the credits of debit ``operation`` on ``owner_id``'s ledger for
    ``expires_in`` seconds (default 900), at most once per nonce.

    The same roles that may post the operation may hold it; amount rules are
    those of posts. Hold nonces are their own namespace per owner: the same
    nonce and payload answer the first hold (``replayed=True``), another
    payload ``NonceConflict``. Raises ``InsufficientBalance`` when the owner's
    available credits (balance - held) do not cover it; nothing is stored then.
    ``dry_run=True`` answers what it would do inside a rolled-back transaction.
    """
    try:
        owner_id_validate(owner_id)
        nonce_validate(nonce)
        policy = _holdable_policy(app, operation)
        resolved = _amount_resolve(policy, amount, _role_for(actor, owner_id, policy))
        seconds = _expires_in_resolve(expires_in)
        fingerprint = entry_fingerprint(
            app=app, operation=f"HOLD:{operation}:{seconds}", amount=resolved
        )
        hold = LedgerHold(
            owner_id=owner_id, app=app, operation=operation, amount=resolved, nonce=nonce,
            fingerprint=fingerprint, created_by=actor.name,
        )  # fmt: skip
        if dry_run:
            try:
                with transaction.atomic():
                    raise _DryRun(_place(hold, seconds, actor))
            except _DryRun as done:
                if not done.result.replayed:
                    done.result.hold.pk = None
                return done.result
        with write_transaction():
            result = _place(hold, seconds, actor)
    except LedgerError as exc:
        if not dry_run:
            _record_refusal(
                exc, app=app, operation=operation, owner_id=owner_id, amount=amount,
                nonce=nonce, actor=actor, hold=True,
            )  # fmt: skip
        raise
    if result.replayed:
        _log_hold("replayed", result.hold, actor)
    return result


def _place(hold: LedgerHold, seconds: int, actor: Actor) -> HoldResult:
    """Inside a transaction: the replay, a refusal, or the new hold."""
    owner_id = hold.owner_id
    state = lock_balance(owner_id)
    now = state.now if state is not None else timezone.now()
    existing = LedgerHold.objects.filter(owner_id=owner_id, nonce=hold.nonce).first()
    if existing is not None:
        if existing.fingerprint != hold.fingerprint:
            raise NonceConflict(
                "This nonce was already used for a different hold.", hold_id=existing.pk
            )
        return HoldResult(hold=_current(existing, now), replayed=True)
    if state is not None and (state.held or state.lot_credits) and settle_locked([owner_id], now):
        state = lock_balance(owner_id)
    balance, held = (state.balance, state.held) if state is not None else (0, 0)
    if balance - held < -hold.amount:
        raise insufficient(balance=balance, held=held, amount=hold.amount)
    # Reserved from lots in consumption order, then from non-expiring credits.
    plan = lots_plan(owner_id, -hold.amount, now=now)[0] if state.lot_credits else ()
    hold.reserved = parts_json(plan)
    hold.created_at = now
    hold.expires_at = now + timedelta(seconds=seconds)
    hold.save(force_insert=True)
    if plan:
        lots_move(owner_id, [(lot, -part, 0) for lot, part in plan])
    Balance.objects.filter(owner_id=owner_id).update(held=F("held") - hold.amount)
    _record_event(hold, "placed", now)
    transaction.on_commit(lambda: _log_hold("placed", hold, actor), robust=True)
    return HoldResult(hold=hold)


def _hold_for_change(hold_id: int, app: str, actor: Actor) -> tuple[LedgerHold, OperationPolicy]:
    """The hold ``hold_id`` of ``app`` (unlocked), once ``actor`` may change it."""
    hold = LedgerHold.objects.filter(pk=hold_id, app=app).first() if hold_id > 0 else None
    if hold is None:
        raise HoldNotFound()
    # An operation no longer configured keeps its holds resolvable by managers.
    policy = registry.policy(app, hold.operation) or OperationPolicy(
        amount=hold.amount, posters=MANAGER
    )
    try:
        _role_for(actor, hold.owner_id, policy)
    except Forbidden:
        raise Forbidden("You may not capture or void this hold.") from None
    return hold, policy


def _locked(hold: LedgerHold) -> tuple[LedgerHold, datetime]:
    """Lock the hold's owner's balance row, then the hold: its current state."""
    state = lock_balance(hold.owner_id)
    locked = LedgerHold.objects.select_for_update().get(pk=hold.pk)
    return _current(locked, state.now), state.now


def hold_capture(
    *, hold_id: int, app: str, actor: Actor, amount: int | None = None
) -> CaptureResult:
    """Capture hold ``hold_id`` of ``app``: post one entry of its operation for
    ``amount`` (default: all of it; a partial amount has the same sign and at
    most the held size) and release the rest, at most once.

    Capturing again with the same amount answers the same entry
    (``replayed=True``). Raises ``HoldNotFound``, ``Forbidden``,
    ``InvalidEntry`` (amount), ``HoldNotPending`` (voided, or captured for
    another amount) and ``HoldExpired``.
    """
    started = time.perf_counter()
    try:
        hold, policy = _hold_for_change(hold_id, app, actor)
        if amount is None:
            amount = hold.amount
        elif (
            isinstance(amount, bool)
            or not isinstance(amount, int)
            or not (hold.amount <= amount < 0)
        ):
            raise InvalidEntry(
                f"amount must be a negative integer from {hold.amount} to -1.", field="amount"
            )
        with write_transaction():
            hold, now = _locked(hold)
            if hold.status == HoldStatus.CAPTURED:
                entry = LedgerEntry.objects.get(owner_id=hold.owner_id, hold=hold.pk)
                if entry.amount != amount:
                    raise HoldNotPending(
                        f"This hold was captured for {entry.amount}.", status=hold.status
                    )
                result = CaptureResult(hold=hold, entry=entry, replayed=True)
            elif hold.status == HoldStatus.EXPIRED:
                raise HoldExpired(status=hold.status)
            elif hold.status != HoldStatus.PENDING:
                raise HoldNotPending(status=hold.status)
            else:
                # The reservation's lots, in order: consumed up to the amount,
                # the rest goes back (and expires at once if its lot has).
                consumed, returned, left = [], [], -amount
                for lot, part in parts_of(hold.reserved):
                    take = min(part, left)
                    left -= take
                    if take:
                        consumed.append((lot, take))
                    if part - take:
                        returned.append((lot, part - take))
                prepared = PreparedEntry(
                    owner_id=hold.owner_id, operation=hold.operation,
                    # Client nonces have no spaces: this one is the hold's alone.
                    nonce=f"hold {hold.pk}", app=app, amount=amount, metadata=None,
                    policy=policy, limit_key=None,
                    fingerprint=entry_fingerprint(app=app, operation=hold.operation,
                                                  amount=amount),
                    actor_name=actor.name, hold=hold.pk, release=-hold.amount,
                    consumed=tuple(consumed), lot_delta=-sum(take for _, take in consumed),
                    lot_moves=tuple((lot, 0, take) for lot, take in consumed)
                    + tuple((lot, part, 0) for lot, part in returned),
                    lots_checked=True, at=now,
                )  # fmt: skip
                entry = _post(prepared, actor=actor, now=now, started=started).entry
                hold.status, hold.entry = HoldStatus.CAPTURED, entry.pk
                hold.resolved_at, hold.resolved_by = entry.created_at, actor.name
                hold.save(update_fields=["status", "entry", "resolved_at", "resolved_by"])
                captured = hold
                _record_event(hold, "captured", hold.resolved_at)
                transaction.on_commit(lambda: _log_hold("captured", captured, actor), robust=True)
                result = CaptureResult(hold=hold, entry=entry)
    except LedgerError as exc:
        _record_refusal(exc, app=app, operation="HOLD_CAPTURE", actor=actor, hold_id=hold_id)
        raise
    return result


def hold_void(*, hold_id: int, app: str, actor: Actor, reason: str = "") -> HoldResult:
    """Void hold ``hold_id`` of ``app``: its credits are available again.

    Voiding a voided hold, or one that has expired (its credits are released
    already), changes nothing and answers it (``replayed=True``). ``reason``
    goes to the decision log line. Raises
    ``HoldNotFound``, ``Forbidden`` and ``HoldNotPending`` (captured).
    """
    try:
        hold, _ = _hold_for_change(hold_id, app, actor)
        with write_transaction():
            hold, now = _locked(hold)
            if hold.status == HoldStatus.CAPTURED:
                raise HoldNotPending(status=hold.status)
            if hold.status != HoldStatus.PENDING:
                return HoldResult(hold=hold, replayed=True)
            hold.status, hold.resolved_at, hold.resolved_by = HoldStatus.VOIDED, now, actor.name
            hold.save(update_fields=["status", "resolved_at", "resolved_by"])
            Balance.objects.filter(owner_id=hold.owner_id).update(held=F("held") + hold.amount)
            if hold.reserved:
                # Back to their lots; those that have expired expire at once.
                lots_move(hold.owner_id, [(lot, part, 0) for lot, part in parts_of(hold.reserved)])
                settle_locked([hold.owner_id], now)
            _record_event(hold, "voided", now)
            voided = hold
            transaction.on_commit(
                lambda: _log_hold("voided", voided, actor, reason=reason), robust=True
            )
    except LedgerError as exc:
        _record_refusal(exc, app=app, operation="HOLD_VOID", actor=actor, hold_id=hold_id)
        raise
    return HoldResult(hold=hold)
