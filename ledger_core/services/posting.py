"""Single posts: every credit movement of one entry goes through ``entry_post``.

Design decision: a post is one short transaction that serialises per owner on
the owner's ``Balance`` row. Credits use an upsert (so the first post for a new
owner cannot race), debits a conditional ``UPDATE ... WHERE balance + x >= 0``;
either returns the new balance, and the entry is inserted with it as
``balance_after``. Both are one statement (a data-modifying CTE), atomic on
its own, so a post outside a transaction is a single round
trip; inside a caller's transaction it runs under a savepoint, so a consumer
app can create its own rows and the entry in one commit. Idempotency and
limits are enforced by unique keys: the fast path does not look the nonce up
first; a unique violation (or a refused debit) is followed by a look-up that
turns it into a replay, a conflict or a limit refusal. Side effects (metrics,
logs, signal) wait for ``on_commit``.

The same statement keeps what the balance row also carries: credits reserved
by holds (a debit must leave ``held`` alone), credit lots (an owner with lots
is refused by the statement and posted under the row lock by
``_post_settled``, which settles due holds and lots and plans what the debit
consumes), and the owner's hash chain (the new head is computed in the
UPDATE, ``ledger_core.chain``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.errors import UniqueViolation

from .. import chain, metrics
from ..actors import Actor
from ..conf import ledger_settings
from ..exceptions import (
    AlreadyReversed,
    Forbidden,
    InsufficientBalance,
    InvalidEntry,
    LedgerError,
    LimitReached,
    NonceConflict,
    NonceInFlight,
    OutcomeUnknown,
    UnknownOperation,
)
from ..models import ENTRY_FIELDS, Balance, CreditLot, LedgerEntry
from ..operations import MAX_LIFETIME, OperationPolicy, Role, registry
from ..selectors import balance_get
from ..signals import entry_posted
from ..validation import metadata_validate, nonce_validate, owner_id_validate
from .expiry import lock_balance, settle_locked
from .lots import LOTS_MOVE_SQL, lots_move_params, lots_plan, parts_json
from .rows import entry_fingerprint

logger = logging.getLogger("ledger_core.services")
# One line per ledger decision (posted, replayed, refused) with owner, app,
# operation, amount, nonce and outcome as fields.
decision_log = logging.getLogger("ledger_core.decisions")

_BALANCE_TABLE = Balance._meta.db_table

# Text parameters carry an explicit ``::text``: with server-side binding
# (settings: DATABASE_PREPARED_STATEMENTS) psycopg sends a Python str untyped
# and PostgreSQL infers its type from where it stands in the statement, which
# a parameter in a SELECT list or an argument of an overloaded function does
# not settle.

# The balance change of a post; both return the new (balance, version), the
# time of the change and the owner's hash chain head before and after it, or
# no row when a debit is not covered. The time is the database clock's (``at``
# when the post was decided under the row lock), and at least a microsecond
# after the owner's previous change, so an owner's entries are in time order
# in the order they were applied (what a point-in-time balance needs). The
# new head hashes the previous head with the entry's canonical bytes
# (``ledger_core.chain``): the three fields known only here are encoded by
# ledger_hash_field/ledger_hash_time, the rest arrives as ``static``.
_CLOCK = "WITH x AS (SELECT coalesce(%(at)s::timestamptz, clock_timestamp()) AS ts), "
_NEXT_TIME = "greatest({ts}, B.updated_at + interval '1 microsecond')"


def _head(prev: str, seq: str, balance: str, time: str) -> str:
    """SQL for the next head hash, from SQL expressions of its parts."""
    return (
        f"encode(sha256(decode({prev}, 'hex') || ledger_hash_field(({seq})::text) || "
        f"ledger_hash_field(({balance})::text) || ledger_hash_field(ledger_hash_time({time})) "
        "|| %(static)s::bytea), 'hex')"
    )


_CREDIT_SQL = f"""
INSERT INTO {_BALANCE_TABLE} AS B (owner_id, balance, version, updated_at, lot_credits,
    head_prev, head_hash)
SELECT %(owner)s::text, %(amount)s, 1, x.ts, %(lot_delta)s, %(genesis)s::text,
    {_head("%(genesis)s::text", "1", "%(amount)s", "x.ts")}
FROM x
ON CONFLICT (owner_id) DO UPDATE SET
    balance = B.balance + EXCLUDED.balance,
    version = B.version + 1,
    lot_credits = B.lot_credits + EXCLUDED.lot_credits,
    updated_at = {_NEXT_TIME.format(ts="EXCLUDED.updated_at")},
    head_prev = B.head_hash,
    head_hash = {
    _head(
        "B.head_hash",
        "B.version + 1",
        "B.balance + EXCLUDED.balance",
        _NEXT_TIME.format(ts="EXCLUDED.updated_at"),
    )
}
RETURNING balance, version, updated_at, head_prev, head_hash
"""  # noqa: S608 (table name is a model constant, values are parameters)

# A debit must leave the credits reserved by holds (``held``) in place; a
# hold's capture releases its reservation (``release``) in the same change.
# Both are columns of the row being updated, so the condition is re-checked
# on the newest row version when the UPDATE waited for the row lock. An owner
# with credit lots (``lot_credits > 0``) is refused here unless the lots were
# planned under the row's lock (``lots_checked``): see ``_post_settled``.
_DEBIT_SQL = f"""
UPDATE {_BALANCE_TABLE} AS B
SET balance = B.balance + %(amount)s, held = B.held - %(release)s,
    lot_credits = B.lot_credits + %(lot_delta)s, version = B.version + 1,
    updated_at = {_NEXT_TIME.format(ts="x.ts")},
    head_prev = B.head_hash,
    head_hash = {
    _head("B.head_hash", "B.version + 1", "B.balance + %(amount)s", _NEXT_TIME.format(ts="x.ts"))
}
FROM x
WHERE B.owner_id = %(owner)s::text AND B.balance + %(amount)s >= B.held - %(release)s
    AND (%(lots_checked)s OR B.lot_credits = 0)
RETURNING B.balance, B.version, B.updated_at, B.head_prev, B.head_hash
"""  # noqa: S608

# PostgreSQL: the balance change, the entry and (for a credit with an expiry)
# its lot in one statement (a data-modifying CTE): a unique violation on the
# entry undoes the balance change with it.
_ENTRY_TABLE = LedgerEntry._meta.db_table
_LOT_TABLE = CreditLot._meta.db_table
_ENTRY_INSERT = f"""
, e AS (
INSERT INTO {_ENTRY_TABLE} (owner_id, app, operation, amount, balance_after, nonce,
    fingerprint, limit_key, metadata, created_at, created_by, seq, reverses, hold,
    expires_at, consumed, prev_hash, hash)
SELECT %(owner)s::text, %(app)s::text, %(operation)s::text, %(amount)s, b.balance,
    %(nonce)s::text, %(fingerprint)s::text, %(limit_key)s::text, %(metadata)s::jsonb,
    b.updated_at, %(actor)s::text, b.version, %(reverses)s, %(hold)s, %(expires_at)s,
    %(consumed)s::jsonb, b.head_prev, b.head_hash
FROM b
RETURNING id, balance_after, created_at, seq, owner_id, app, expires_at, amount, prev_hash,
    hash
), lot AS (
INSERT INTO {_LOT_TABLE} (entry, owner_id, app, expires_at, amount, remaining, consumed,
    expired, expiries)
SELECT id, owner_id, app, expires_at, amount, amount, 0, 0, 0 FROM e
WHERE expires_at IS NOT NULL
)
{{moves}}
SELECT id, balance_after, created_at, seq, prev_hash, hash FROM e
"""  # noqa: S608
# The lots a post consumes or gives back, changed in the same statement
# (only if the entry is stored).
_LOT_MOVES = f"\n, moves AS ({LOTS_MOVE_SQL} AND EXISTS (SELECT 1 FROM e)\n)"  # noqa: S608
_PG_CREDIT_POST = f"{_CLOCK}b AS ({_CREDIT_SQL}){_ENTRY_INSERT.format(moves='')}"
_PG_DEBIT_POST = f"{_CLOCK}b AS ({_DEBIT_SQL}){_ENTRY_INSERT.format(moves='')}"
_PG_CREDIT_POST_MOVES = f"{_CLOCK}b AS ({_CREDIT_SQL}){_ENTRY_INSERT.format(moves=_LOT_MOVES)}"
_PG_DEBIT_POST_MOVES = f"{_CLOCK}b AS ({_DEBIT_SQL}){_ENTRY_INSERT.format(moves=_LOT_MOVES)}"


@dataclasses.dataclass(frozen=True)
class PostResult:
    """What ``entry_post`` did: the entry, and whether it was a replay."""

    entry: LedgerEntry
    replayed: bool = False


def max_entry_amount() -> int:
    return int(ledger_settings.MAX_ENTRY_AMOUNT)


def operation_policy_get(*, app: str, operation: str, direct: bool = False) -> OperationPolicy:
    """The policy of ``operation`` in ``app``; ``UnknownOperation`` if it has none.

    ``direct=True``: operations posted only through an app's own endpoints
    count as unknown too, and are left out of the ``allowed`` list.
    """
    policy = registry.policy(app, operation) if isinstance(operation, str) else None
    if policy is None or policy.amount is None or (direct and not policy.direct):
        detail = (
            f"{operation} cannot be posted directly in app {app!r}; use the app's own endpoint."
            if policy is not None and policy.amount is not None
            else f"Unknown operation {operation!r} for app {app!r}."
        )
        raise UnknownOperation(
            detail, field="operation", allowed=registry.postable(app, direct=direct)
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


def daily_limit_frees_at(entry: LedgerEntry) -> datetime | None:
    """When the daily limit ``entry`` counted against frees up: the start of
    the UTC day after the one it was posted on (so a replay of yesterday's
    claim says when yesterday's limit ended, as its first answer did). None
    for an entry under no daily limit."""
    _, _, day = (entry.limit_key or "").rpartition(":")
    try:
        posted_on = date.fromisoformat(day)
    except ValueError:
        return None
    return datetime(posted_on.year, posted_on.month, posted_on.day, tzinfo=UTC) + timedelta(days=1)


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


@dataclasses.dataclass(frozen=True)
class PreparedEntry:
    """A post that passed every check that needs no database: ready to apply."""

    owner_id: str
    operation: str
    nonce: str
    app: str
    amount: int
    metadata: dict[str, Any] | None
    policy: OperationPolicy
    limit_key: str | None
    fingerprint: str
    actor_name: str
    reverses: int | None = None
    #: A hold's capture: the hold's id, and the credits it releases from ``held``.
    hold: int | None = None
    release: int = 0
    #: A credit that expires (it becomes a lot).
    expires_at: datetime | None = None
    #: Credit lots: what a debit consumed ((lot, amount), shown on the entry),
    #: the change of ``Balance.lot_credits``, and the lots' rows to change
    #: ((lot, remaining delta, consumed delta), applied with the entry).
    consumed: tuple[tuple[int, int], ...] = ()
    lot_delta: int = 0
    lot_moves: tuple[tuple[int, int, int], ...] = ()
    #: Set once the lots were planned under the owner's row lock.
    lots_checked: bool = False
    #: Consume this lot first (reversing the lot's own grant).
    first_lot: int | None = None
    #: The entry's time when decided under the row lock (else the clock's at
    #: the change): the instant its lots and holds were judged at.
    at: datetime | None = None

    def entry(
        self,
        *,
        balance_after: int,
        created_at: datetime,
        seq: int,
        pk: int | None = None,
        prev_hash: str | None = None,
        hash: str | None = None,  # noqa: A002 (the field's name)
    ) -> LedgerEntry:
        """The entry this post stores (with its id once stored)."""
        return LedgerEntry(
            id=pk, owner_id=self.owner_id, app=self.app, operation=self.operation,
            amount=self.amount, balance_after=balance_after, nonce=self.nonce,
            fingerprint=self.fingerprint, limit_key=self.limit_key, metadata=self.metadata,
            created_at=created_at, created_by=self.actor_name, seq=seq, reverses=self.reverses,
            hold=self.hold, expires_at=self.expires_at, consumed=self.consumed_json(),
            prev_hash=prev_hash, hash=hash,
        )  # fmt: skip

    def static_part(self) -> bytes:
        """The entry's canonical bytes known before it applies (``ledger_core.chain``)."""
        return chain.static_part(
            owner_id=self.owner_id, app=self.app, operation=self.operation, amount=self.amount,
            nonce=self.nonce, reverses=self.reverses, hold=self.hold, expires_at=self.expires_at,
            metadata=self.metadata, consumed=self.consumed_json(),
        )  # fmt: skip

    def consumed_json(self) -> list[dict[str, int]] | None:
        """``consumed`` as the entry stores it (None for no lot)."""
        return parts_json(self.consumed) if self.consumed else None


#: The refusal of an ``expires_at`` outside the lifetime a credit may have.
LIFETIME_RULE = "expires_at must be in the future and at most 10 years ahead."


def entry_prepare(
    *,
    owner_id: str,
    operation: str,
    nonce: str,
    app: str,
    actor: Actor,
    amount: int | None = None,
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
    direct: bool = False,
    expires_at: datetime | None = None,
) -> PreparedEntry:
    """Check a post without touching the database: input, operation, permission, amount.

    Raises the same ``LedgerError`` that ``entry_post`` would for these rules.
    ``direct=True`` also refuses operations the app posts only through its own
    domain endpoints, as the generic ledger API does.
    """
    owner_id_validate(owner_id)
    nonce_validate(nonce)
    metadata_validate(metadata)
    policy = operation_policy_get(app=app, operation=operation, direct=direct)
    role = _role_for(actor, owner_id, policy)
    resolved = _amount_resolve(policy, amount, role)
    now = now or timezone.now()
    operation_key = operation
    asked_expiry = expires_at is not None
    if expires_at is not None:
        _expires_at_validate(expires_at, resolved, role)
        # The nonce is bound to the expiry the request asked for.
        operation_key = f"{operation}@{expires_at.astimezone(UTC).isoformat()}"
    elif resolved > 0 and policy.expires_after is not None:
        expires_at = now + policy.expires_after
    prepared = PreparedEntry(
        owner_id=owner_id,
        operation=operation,
        nonce=nonce,
        app=app,
        amount=resolved,
        metadata=metadata,
        policy=policy,
        limit_key=_limit_key(policy, operation, now),
        fingerprint=entry_fingerprint(app=app, operation=operation_key, amount=resolved),
        actor_name=actor.name,
        expires_at=expires_at,
        lot_delta=resolved if expires_at is not None else 0,
    )
    if asked_expiry and expires_at <= now:
        raise LifetimeOver(prepared)
    if asked_expiry and expires_at > now + MAX_LIFETIME:
        raise InvalidEntry(LIFETIME_RULE, field="expires_at")
    return prepared


class LifetimeOver(InvalidEntry):
    """A post whose ``expires_at`` has passed: bad input, unless it is the
    retry of a post stored before then (``prepared`` is what it asks for)."""

    def __init__(self, prepared: PreparedEntry) -> None:
        super().__init__(LIFETIME_RULE, field="expires_at")
        self.prepared = prepared


def stored_retry(over: LifetimeOver) -> PostResult:
    """The answer to a post whose ``expires_at`` has passed: the replay (or
    ``NonceConflict``) when its nonce was stored, else the refusal itself. A
    client retrying a grant after its lifetime ended gets the grant it made."""
    existing = _entry_by_nonce(over.prepared.owner_id, over.prepared.nonce)
    if existing is None:
        raise over
    return _replay_or_conflict(existing, over.prepared.fingerprint)


def _expires_at_validate(expires_at: object, amount: int, role: Role) -> None:
    """The rules of ``expires_at`` that do not depend on the time (those that
    do are checked once the post is prepared)."""
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        raise InvalidEntry("expires_at must be an ISO 8601 instant with a time zone.",
                           field="expires_at")  # fmt: skip
    if amount <= 0:
        raise InvalidEntry("expires_at is only for credits (a positive amount).",
                           field="expires_at")  # fmt: skip
    if role == "owner":
        raise InvalidEntry("Only managers may set expires_at.", field="expires_at")


def _pg_post(p: PreparedEntry, now: datetime) -> LedgerEntry:
    params = {
        "owner": p.owner_id,
        "app": p.app,
        "operation": p.operation,
        "amount": p.amount,
        "nonce": p.nonce,
        "fingerprint": p.fingerprint,
        "limit_key": p.limit_key,
        "metadata": None if p.metadata is None else json.dumps(p.metadata),
        "actor": p.actor_name,
        "reverses": p.reverses,
        "hold": p.hold,
        "release": p.release,
        "expires_at": p.expires_at,
        "consumed": None if not p.consumed else json.dumps(p.consumed_json()),
        "lot_delta": p.lot_delta,
        "lots_checked": p.lots_checked,
        "at": p.at,
        "static": p.static_part(),
        "genesis": chain.GENESIS,
    }
    if p.lot_moves:
        params.update(lots_move_params(p.owner_id, p.lot_moves))
        sql = _PG_CREDIT_POST_MOVES if p.amount >= 0 else _PG_DEBIT_POST_MOVES
    else:
        sql = _PG_CREDIT_POST if p.amount >= 0 else _PG_DEBIT_POST
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise _Refused
    if any(remaining > 0 for _, remaining, _ in p.lot_moves):
        # Credits back in lots that have expired expire again at once.
        settle_locked([p.owner_id], holds=False)
    entry = p.entry(
        balance_after=row[1],
        created_at=row[2],
        seq=row[3],
        pk=row[0],
        prev_hash=row[4],
        hash=row[5],
    )
    entry._state.adding = False
    return entry


@contextlib.contextmanager
def write_transaction() -> Iterator[None]:
    """``transaction.atomic()``; a connection lost while the outermost block
    commits answers ``OutcomeUnknown`` (the change may have been stored)."""
    outermost = not connection.in_atomic_block
    committing = False
    try:
        with transaction.atomic():
            yield
            committing = outermost
    except (OperationalError, InterfaceError) as exc:
        if committing:
            raise OutcomeUnknown() from exc
        raise


@contextlib.contextmanager
def _outcome_unknown_on_connection_loss() -> Iterator[None]:
    """Turn a connection lost while a write commits into ``OutcomeUnknown``."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise OutcomeUnknown() from exc


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
    direct: bool = False,
    dry_run: bool = False,
    expires_at: datetime | None = None,
) -> PostResult:
    """Post ``operation`` to ``owner_id``'s ledger as ``actor``, at most once per nonce.

    Returns the new entry, or the original one (``replayed=True``) when the
    same owner, nonce and payload were posted before. Raises
    ``InvalidEntry``/``UnknownOperation`` (bad input), ``Forbidden``,
    ``InsufficientBalance``, ``LimitReached``, ``NonceConflict`` or
    ``NonceInFlight``; nothing is stored when it raises. Works inside a
    caller's ``transaction.atomic()``: the entry then commits with it.
    ``direct=True`` refuses operations that the app posts only through its own
    endpoints (as the generic ledger API, the admin and the commands do).

    ``expires_at`` (managers and the system; credits only, at most 10 years
    ahead) makes the credit a lot that expires then; without it a credit gets
    its operation's ``expires_after``, if any. Debits consume lots soonest
    expiry first (``services.lots``).

    ``dry_run=True``: answer what the post would, storing nothing. The post
    runs for real inside a transaction that is then rolled back, so every check
    (input, permission, limits, balance, nonce) is the real one; no nonce is
    used up, no side effect runs (they wait for a commit that never comes) and
    nothing is counted or logged. The returned entry (unless it is a replay)
    was never stored: it has no id.
    """
    started = time.perf_counter()
    now = timezone.now()
    try:
        try:
            prepared = entry_prepare(
                owner_id=owner_id,
                operation=operation,
                nonce=nonce,
                app=app,
                actor=actor,
                amount=amount,
                metadata=metadata,
                now=now,
                direct=direct,
                expires_at=expires_at,
            )
        except LifetimeOver as over:
            result = stored_retry(over)
        else:
            if dry_run:
                return _post_rolled_back(prepared, actor=actor, now=now, started=started)
            result = _post(prepared, actor=actor, now=now, started=started)
    except LedgerError as exc:
        if not dry_run:
            _record_refusal(
                exc, app=app, operation=operation, owner_id=owner_id, amount=amount,
                nonce=nonce, actor=actor,
            )  # fmt: skip
        raise
    _record_replay(result, actor)
    return result


class _DryRun(Exception):
    """Internal: leave the dry run's atomic block (rolling it back) with its result."""

    def __init__(self, result: PostResult) -> None:
        self.result = result


def _post_rolled_back(
    prepared: PreparedEntry, *, actor: Actor, now: datetime, started: float
) -> PostResult:
    """``_post`` inside a transaction that is rolled back: what it would answer."""
    try:
        with transaction.atomic():
            raise _DryRun(_post(prepared, actor=actor, now=now, started=started))
    except _DryRun as done:
        result = done.result
    if not result.replayed:
        result.entry.pk = None
    return result


def _record_replay(result: PostResult, actor: Actor) -> None:
    """Count and log a post answered by an earlier entry (nothing for a new one)."""
    if result.replayed:
        metrics.entry_replayed(app=result.entry.app, operation=result.entry.operation)
        _log_entry("replayed", result.entry, actor)


def _record_refusal(
    error: LedgerError, *, app: str, operation: object, actor: Actor, **fields: Any
) -> None:
    """Count a refused post and log it as one decision line."""
    metrics.entry_rejected(app=app, operation=operation, reason=error.code)
    decision_log.info(
        "ledger.refused",
        extra={
            "outcome": "refused",
            "reason": error.code,
            "app": app,
            "operation": operation,
            "actor": actor.name,
            **fields,
        },
    )


def _log_entry(outcome: str, entry: LedgerEntry, actor: Actor) -> None:
    fields = {name: getattr(entry, name) for name in ENTRY_FIELDS if name != "metadata"}
    fields["entry_id"] = fields.pop("id")
    fields["created_at"] = entry.created_at.isoformat()
    decision_log.info(
        f"ledger.{outcome}", extra={"outcome": outcome, **fields, "actor": actor.name}
    )


def _settled_elsewhere(prepared: PreparedEntry) -> PostResult | None:
    """After a refused statement: the replay if this nonce was used before
    (``NonceConflict`` for another payload); ``AlreadyReversed`` if the entry
    this reversal undoes has been reversed by another request; else None."""
    existing = _entry_by_nonce(prepared.owner_id, prepared.nonce)
    if existing is not None:
        return _replay_or_conflict(existing, prepared.fingerprint)
    if prepared.reverses is not None:
        reversal = (
            LedgerEntry.objects.filter(owner_id=prepared.owner_id, reverses=prepared.reverses)
            .values_list("id", flat=True)
            .first()
        )
        if reversal is not None:
            raise AlreadyReversed(reversal_id=reversal)
    return None


def _post(prepared: PreparedEntry, *, actor: Actor, now: datetime, started: float) -> PostResult:
    """Apply a prepared post: balance change and entry, or a replay/refusal."""
    try:
        if connection.in_atomic_block or prepared.lot_moves:
            # Inside the caller's transaction: a savepoint keeps it usable
            # when the statement fails (the caller's commit decides). Changes
            # to lots go with the entry in one transaction.
            with write_transaction():
                entry = _pg_post(prepared, now)
        else:
            # One statement that commits on its own: a connection lost while it
            # runs may have lost only the answer.
            with _outcome_unknown_on_connection_loss():
                entry = _pg_post(prepared, now)
    except _Refused:
        if not prepared.lots_checked:
            # The owner may have holds past their expiry (still counted in
            # ``held`` until released) or credit lots to consume: settle them
            # under the row lock and try once more.
            return _post_settled(prepared, actor=actor, now=now, started=started)
        return _refusal(prepared)
    except IntegrityError as exc:
        return _after_integrity_error(prepared, now, exc)
    return _posted(entry, actor, started)


def _posted(entry: LedgerEntry, actor: Actor, started: float) -> PostResult:
    """A new entry: its side effects wait for the commit."""
    transaction.on_commit(lambda: _after_commit(entry, actor, started), robust=True)
    return PostResult(entry=entry)


def _after_integrity_error(
    prepared: PreparedEntry, now: datetime, error: IntegrityError
) -> PostResult:
    """A unique key refused the entry: a replay or a conflict of its nonce, its
    limit used up, or a post with the same nonce still in flight. Any other
    integrity error (a CHECK of the balance row: the rows disagree with
    what the post computed) is raised as it is, never answered as retryable."""
    if not isinstance(error.__cause__, UniqueViolation):
        raise error
    settled = _settled_elsewhere(prepared)
    if settled is not None:
        return settled
    limit_key = prepared.limit_key
    if (
        limit_key is not None
        and LedgerEntry.objects.filter(owner_id=prepared.owner_id, limit_key=limit_key).exists()
    ):
        raise _limit_refusal(prepared.policy, prepared.operation, now) from None
    # The conflicting post has not committed yet (or rolled back): the
    # client may retry with the same nonce.
    raise NonceInFlight() from None


def insufficient(*, balance: int, held: int, amount: int) -> InsufficientBalance:
    """The refusal of a debit (or hold) of ``amount`` (negative) that
    ``balance - held`` does not cover."""
    return InsufficientBalance(
        f"Available {balance - held} (balance {balance}, held {held}) does not cover {-amount}.",
        balance=balance,
        available=balance - held,
        required=-amount,
    )


def _refusal(prepared: PreparedEntry) -> PostResult:
    """After a refused debit: the replay if another request settled this
    nonce, else ``InsufficientBalance`` with the balance as reads show it
    (holds and lots past their expiry left out, whether settled yet or not)."""
    settled = _settled_elsewhere(prepared)
    if settled is not None:
        return settled
    view = balance_get(owner_id=prepared.owner_id)
    raise insufficient(balance=view.balance, held=view.held, amount=prepared.amount)


def _post_settled(
    prepared: PreparedEntry, *, actor: Actor, now: datetime, started: float
) -> PostResult:
    """A post the one-statement path refused (a debit short of ``available``,
    or of an owner with lots): under the owner's row lock, release due holds
    and expire due lots (``settle_locked``) at the lock's instant, plan what
    the debit consumes from lots, and post, or refuse."""
    owner_id = prepared.owner_id
    try:
        with write_transaction():
            state = lock_balance(owner_id)
            if state is None:
                raise _Refused
            at = state.now
            if state.held and settle_locked([owner_id], at, lots=False):
                state = lock_balance(owner_id)
            plan: tuple[tuple[int, int], ...] = ()
            if state.lot_credits and prepared.amount < 0:
                need = -prepared.amount
                plan, due = lots_plan(owner_id, need, first=prepared.first_lot, now=at)
                if due and settle_locked([owner_id], at, holds=False):
                    state = lock_balance(owner_id)
            if state.balance + prepared.amount < state.held - prepared.release:
                raise _Refused
            ready = dataclasses.replace(
                prepared,
                consumed=plan,
                lot_delta=prepared.lot_delta - sum(amount for _, amount in plan),
                lot_moves=tuple((lot, -amount, amount) for lot, amount in plan),
                lots_checked=True,
                at=at,
            )
            entry = _pg_post(ready, now)
    except _Refused:
        return _refusal(prepared)
    except IntegrityError as exc:
        return _after_integrity_error(prepared, now, exc)
    return _posted(entry, actor, started)


def _after_commit(entry: LedgerEntry, actor: Actor, started: float) -> None:
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
