"""Reversals: undoing an entry with one REVERSAL entry, at most once.

Design decision: a reversal is an ordinary post of the ledger's own operation,
through the same single statement as every post, with the reversed entry's id
in ``reverses``; a unique ``(owner_id, reverses)`` key makes it at most one
per entry under any concurrency, and the debit's balance condition keeps it
from overdrawing.
"""

from __future__ import annotations

import time

from django.utils import timezone

from ..actors import Actor
from ..exceptions import (
    EntryNotFound,
    Forbidden,
    InvalidEntry,
    LedgerError,
    NotReversible,
)
from ..models import LEDGER_OPERATIONS, REVERSAL, LedgerEntry
from ..operations import MANAGER, OperationPolicy
from ..validation import nonce_validate
from .lots import parts_of
from .posting import (
    PostResult,
    PreparedEntry,
    _post,
    _record_refusal,
    _record_replay,
    entry_fingerprint,
)


def entry_reverse(*, entry_id: int, app: str, actor: Actor, nonce: str, reason: str) -> PostResult:
    """Undo entry ``entry_id`` of ``app`` with a ``REVERSAL`` entry of the
    opposite amount (managers and the system only), at most once per entry.

    Idempotent by nonce like any post (a retry answers the same reversal).
    Raises ``EntryNotFound`` (no such entry in this app), ``Forbidden``,
    ``NotReversible`` (a reversal, a credit expiry, or an entry of amount 0),
    ``AlreadyReversed`` (with ``reversal_id``), ``InsufficientBalance`` (the
    owner no longer has the credits a reversed credit gave: a reversal never
    overdraws) and ``InvalidEntry``. The reversed entry still counts for its
    operation's limit (a reversed daily reward is not claimable again that day).
    """
    started = time.perf_counter()
    now = timezone.now()
    entry = LedgerEntry.objects.filter(pk=entry_id, app=app).first() if entry_id > 0 else None
    try:
        if entry is None:
            raise EntryNotFound()
        if not (actor.can_post_any or actor.is_system):
            raise Forbidden("Only managers may reverse entries.")
        if entry.operation in LEDGER_OPERATIONS or entry.amount == 0:
            raise NotReversible(
                f"A {entry.operation} entry cannot be reversed." if entry.amount
                else "An entry of amount 0 moved no credits."
            )  # fmt: skip
        nonce_validate(nonce)
        reason = (reason or "").strip()
        if not reason or len(reason) > 500:
            raise InvalidEntry("reason is required (at most 500 characters).", field="reason")
        amount = -entry.amount
        returned = parts_of(entry.consumed)
        prepared = PreparedEntry(
            owner_id=entry.owner_id, operation=REVERSAL, nonce=nonce, app=app, amount=amount,
            metadata={"reason": reason}, policy=OperationPolicy(amount=amount, posters=MANAGER),
            limit_key=None,
            fingerprint=entry_fingerprint(app=app, operation=f"{REVERSAL}:{entry.pk}",
                                          amount=amount),
            actor_name=actor.name, reverses=entry.pk,
            # A reversed grant gives up its own lot first; a reversed debit
            # gives its credits back to the lots it consumed (those expired
            # since expire again at once).
            first_lot=entry.pk if entry.expires_at is not None else None,
            lot_moves=tuple((lot, part, -part) for lot, part in returned),
            lot_delta=sum(part for _, part in returned),
        )  # fmt: skip
        # A second reversal is refused by the (owner_id, reverses) key or the
        # balance check, and _post names the reversal that exists.
        result = _post(prepared, actor=actor, now=now, started=started)
    except LedgerError as exc:
        _record_refusal(
            exc, app=app, operation=REVERSAL, owner_id=getattr(entry, "owner_id", None),
            nonce=nonce, actor=actor, reverses=entry_id,
        )  # fmt: skip
        raise
    _record_replay(result, actor)
    return result
