"""Batches: many posts in one transaction, with every rule of a single post.

Design decision: balance rows are locked in owner order (no deadlocks between
batches), existing nonces and limits are read in one query per chunk, and new
entries are inserted with ``unnest()`` arrays (bound in binary), so a batch
of thousands costs a handful of statements; side effects run once per batch
after commit. Due holds and lots of the locked owners are settled first;
debits leave ``held`` alone; entries continue each owner's hash chain
(computed here, as the single post's statement would). Items of owners with
credit lots (or getting one) are posted one by one through the single post's
path, under the same locks, so their debits consume lots in order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from .. import chain, metrics
from ..actors import Actor
from ..exceptions import (
    BatchRefused,
    LedgerError,
    NonceConflict,
    OutcomeUnknown,
)
from ..models import LedgerEntry
from ..signals import entry_posted
from .expiry import settle_locked
from .posting import (
    _BALANCE_TABLE,
    LifetimeOver,
    PreparedEntry,
    _limit_refusal,
    _log_entry,
    _post,
    _record_refusal,
    decision_log,
    entry_prepare,
    insufficient,
    logger,
)
from .rows import entries_insert


@dataclasses.dataclass(frozen=True)
class EntryRequest:
    """One post of a batch, as a client or a command gives it."""

    owner_id: str
    operation: str
    nonce: str
    amount: int | None = None
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None


@dataclasses.dataclass
class BatchItemResult:
    """The outcome of one batch item: a new entry, a replay, or a refusal."""

    index: int
    entry: LedgerEntry | None = None
    replayed: bool = False
    error: LedgerError | None = None

    @property
    def status(self) -> int:
        if self.error is not None:
            return self.error.status
        return 200 if self.replayed else 201


_LOCK_CHUNK = 5000
# Named columns, not ``e.*``: a prepared statement must keep its result's shape.
_ENTRY_COLUMNS = ", ".join(f"e.{f.column}" for f in LedgerEntry._meta.concrete_fields)
_MICROSECOND = timedelta(microseconds=1)


def _batch_lock_balances(owners: list[str], create: set[str], now: datetime) -> dict[str, list]:
    """Lock the owners' balance rows in sorted order; create rows for ``create``."""
    state: dict[str, list] = {}
    to_create = sorted(create)
    with connection.cursor() as cursor:
        for start in range(0, len(to_create), _LOCK_CHUNK):
            chunk = to_create[start : start + _LOCK_CHUNK]
            cursor.execute(
                f"INSERT INTO {_BALANCE_TABLE} (owner_id, balance, version, updated_at) "  # noqa: S608
                "SELECT o, 0, 0, %s FROM unnest(%b::text[]) AS o "
                "ON CONFLICT (owner_id) DO NOTHING",
                [now, chunk],
            )
    with connection.cursor() as cursor:
        for start in range(0, len(owners), _LOCK_CHUNK):
            chunk = owners[start : start + _LOCK_CHUNK]
            cursor.execute(
                f"SELECT {_STATE_COLUMNS} FROM {_BALANCE_TABLE} "  # noqa: S608
                "WHERE owner_id = ANY(%b::text[]) ORDER BY owner_id FOR UPDATE",
                [chunk],
            )
            for owner_id, *row in cursor.fetchall():
                state[owner_id] = row
    unsettled = sorted(owner for owner, row in state.items() if row[2] or row[3])
    if unsettled and settle_locked(unsettled):
        # Due holds were released and due lots expired: read the rows again.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_STATE_COLUMNS} FROM {_BALANCE_TABLE} "  # noqa: S608
                "WHERE owner_id = ANY(%b::text[])",
                [unsettled],
            )
            for owner_id, *row in cursor.fetchall():
                state[owner_id] = row
    return state


# An owner's row as a batch tracks it: [balance, version, held, lot_credits,
# head hash, time of the last change].
_STATE_COLUMNS = "owner_id, balance, version, held, lot_credits, head_hash, updated_at"


def _batch_existing(prepared: list[PreparedEntry]) -> tuple[dict, set]:
    """Entries already stored for these (owner, nonce) pairs, and used limit keys."""
    by_nonce: dict[tuple[str, str], LedgerEntry] = {}
    limits: set[tuple[str, str]] = set()
    nonces_of: dict[str, list[str]] = {}
    limits_of: dict[str, list[str]] = {}
    for p in prepared:
        nonces_of.setdefault(p.owner_id, []).append(p.nonce)
        if p.limit_key:
            limits_of.setdefault(p.owner_id, []).append(p.limit_key)
    owners = sorted(nonces_of)
    for start in range(0, len(owners), _LOCK_CHUNK):
        chunk = owners[start : start + _LOCK_CHUNK]
        pair_owners = [o for o in chunk for _ in nonces_of[o]]
        pair_nonces = [n for o in chunk for n in nonces_of[o]]
        # A join on the exact (owner_id, nonce) pairs uses the unique index.
        found = LedgerEntry.objects.raw(
            f"SELECT {_ENTRY_COLUMNS} FROM {LedgerEntry._meta.db_table} e "  # noqa: S608
            "JOIN unnest(%b::text[], %b::text[]) AS p(owner_id, nonce) "
            "ON e.owner_id = p.owner_id AND e.nonce = p.nonce",
            [pair_owners, pair_nonces],
        )
        for entry in found:
            by_nonce[(entry.owner_id, entry.nonce)] = entry
        limit_owners = [o for o in chunk for _ in limits_of.get(o, ())]
        limit_keys = [k for o in chunk for k in limits_of.get(o, ())]
        if limit_keys:
            wanted_limits = set(zip(limit_owners, limit_keys, strict=True))
            for owner_id, key in LedgerEntry.objects.filter(
                owner_id__in=set(limit_owners), limit_key__in=set(limit_keys)
            ).values_list("owner_id", "limit_key"):
                if (owner_id, key) in wanted_limits:
                    limits.add((owner_id, key))
    return by_nonce, limits


def _batch_update_balances(
    state: dict[str, list], heads_prev: dict[str, str], touched: set[str]
) -> None:
    owners = sorted(touched)
    with connection.cursor() as cursor:
        for start in range(0, len(owners), _LOCK_CHUNK):
            chunk = owners[start : start + _LOCK_CHUNK]
            cursor.execute(
                f"UPDATE {_BALANCE_TABLE} AS b SET balance = v.balance, version = v.version, "  # noqa: S608
                "updated_at = v.at, head_hash = v.head, head_prev = v.prev "
                "FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::timestamptz[], "
                "%b::text[], %b::text[]) AS v(owner_id, balance, version, at, head, prev) "
                "WHERE b.owner_id = v.owner_id",
                [
                    chunk,
                    [state[o][0] for o in chunk],
                    [state[o][1] for o in chunk],
                    [state[o][5] for o in chunk],
                    [state[o][4] for o in chunk],
                    [heads_prev[o] for o in chunk],
                ],
            )


def entry_post_batch(
    *,
    app: str,
    actor: Actor,
    entries: list[EntryRequest],
    atomic: bool = True,
    direct: bool = False,
) -> list[BatchItemResult]:
    """Post many entries in one transaction, with every rule of ``entry_post``.

    ``atomic=True``: all new entries commit or none do; the first refusal
    raises ``BatchRefused`` (naming the entry's index). ``atomic=False``: each
    entry stands alone; refused ones are reported in their result and the rest
    commit. Replays and nonce conflicts work as for single posts, including
    between two items of one batch. Balance rows are locked in owner order, so
    batches touching the same owners never deadlock, and entries of one owner
    are applied in the order given. Side effects run after commit: one cache
    write per owner, metrics, log lines and ``entry_posted`` per new entry.
    """
    started = time.perf_counter()
    now = timezone.now()
    results = [BatchItemResult(index=i) for i in range(len(entries))]
    prepared: dict[int, PreparedEntry] = {}
    lifetime_over: dict[int, LifetimeOver] = {}

    def refuse(index: int, error: LedgerError) -> None:
        results[index].error = error
        request = entries[index]
        _record_refusal(
            error, app=app, operation=request.operation, owner_id=request.owner_id,
            amount=request.amount, nonce=request.nonce, actor=actor, batch_index=index,
        )  # fmt: skip
        if atomic:
            raise BatchRefused(index, error)

    for i, request in enumerate(entries):
        try:
            prepared[i] = entry_prepare(
                owner_id=request.owner_id,
                operation=request.operation,
                nonce=request.nonce,
                app=app,
                actor=actor,
                amount=request.amount,
                metadata=request.metadata,
                now=now,
                direct=direct,
                expires_at=request.expires_at,
            )
        except LifetimeOver as over:
            # Refused below unless it is the retry of a stored post.
            prepared[i], lifetime_over[i] = over.prepared, over
        except LedgerError as exc:
            refuse(i, exc)

    # Items repeating an earlier item's (owner, nonce) answer like a retry of it.
    primary_of: dict[tuple[str, str], int] = {}
    duplicates: dict[int, int] = {}
    for i, p in prepared.items():
        key = (p.owner_id, p.nonce)
        if key in primary_of:
            first = prepared[primary_of[key]]
            if first.fingerprint != p.fingerprint:
                refuse(
                    i,
                    NonceConflict("This nonce is used twice in the batch with different payloads."),
                )
            else:
                duplicates[i] = primary_of[key]
        else:
            primary_of[key] = i
    primaries = [i for i in primary_of.values()]

    new_entries: list[LedgerEntry] = []
    heads_prev: dict[str, str] = {}
    touched: set[str] = set()
    # Committing here (not inside a caller's transaction), a connection lost
    # at the commit may have lost only the answer: OutcomeUnknown.
    commits_here = not connection.in_atomic_block
    committing = False
    try:
        with transaction.atomic():
            owners = sorted({prepared[i].owner_id for i in primaries})
            creates = {prepared[i].owner_id for i in primaries if prepared[i].amount >= 0}
            state = _batch_lock_balances(owners, creates, now)
            # The time of the batch's changes: the database clock's, now that its
            # rows are held (as for single posts: time order is applied order).
            with connection.cursor() as cursor:
                cursor.execute("SELECT clock_timestamp()")
                applied_at = cursor.fetchone()[0]
            existing, used_limits = _batch_existing([prepared[i] for i in primaries])
            # Owners with credit lots (or getting one) post item by item as
            # single posts do, under the locks taken above: their debits
            # consume lots in order.
            with_lots = {owner for owner, row in state.items() if row[3]} | {
                prepared[i].owner_id for i in primaries if prepared[i].expires_at is not None
            }
            for i in sorted(primaries):
                p = prepared[i]
                stored = existing.get((p.owner_id, p.nonce))
                if stored is not None:
                    if stored.fingerprint == p.fingerprint:
                        results[i].entry, results[i].replayed = stored, True
                    else:
                        refuse(i, NonceConflict(entry_id=stored.pk))
                    continue
                if i in lifetime_over:
                    refuse(i, lifetime_over[i])
                    continue
                if p.limit_key and (p.owner_id, p.limit_key) in used_limits:
                    refuse(i, _limit_refusal(p.policy, p.operation, now))
                    continue
                if p.owner_id in with_lots:
                    try:
                        single = _post(p, actor=actor, now=now, started=started)
                    except LedgerError as exc:
                        refuse(i, exc)
                        continue
                    results[i].entry, results[i].replayed = single.entry, single.replayed
                    if p.limit_key:
                        used_limits.add((p.owner_id, p.limit_key))
                    continue
                balance, version, held, lot_credits, head, last = state.get(
                    p.owner_id, [0, 0, 0, 0, chain.GENESIS, None]
                )
                if balance + p.amount < held:
                    refuse(i, insufficient(balance=balance, held=held, amount=p.amount))
                    continue
                # Time order is applied order (as for single posts), and the
                # entry continues the owner's hash chain.
                at = applied_at if last is None else max(applied_at, last + _MICROSECOND)
                after = balance + p.amount
                digest = chain.entry_hash(
                    head, seq=version + 1, balance_after=after, created_at=at,
                    static=p.static_part(),
                )  # fmt: skip
                state[p.owner_id] = [after, version + 1, held, lot_credits, digest, at]
                heads_prev[p.owner_id] = head
                touched.add(p.owner_id)
                if p.limit_key:
                    used_limits.add((p.owner_id, p.limit_key))
                entry = p.entry(
                    balance_after=after, created_at=at, seq=version + 1, prev_hash=head,
                    hash=digest,
                )  # fmt: skip
                results[i].entry = entry
                new_entries.append(entry)
            if new_entries:
                entries_insert(new_entries)
                _batch_update_balances(state, heads_prev, touched)
            committing = commits_here
    except (OperationalError, InterfaceError) as exc:
        if committing:
            raise OutcomeUnknown() from exc
        raise

    for i, first in duplicates.items():
        source = results[first]
        if source.error is not None:
            results[i].error = source.error
        else:
            results[i].entry, results[i].replayed = source.entry, True
    for result in results:
        if result.replayed and result.entry is not None:
            metrics.entry_replayed(app=app, operation=result.entry.operation)

    def after_commit() -> None:
        amounts: dict[str, list[int]] = {}
        for entry in new_entries:
            amounts.setdefault(entry.operation, []).append(entry.amount)
        # One latency sample per batch: every entry of it took the same time.
        metrics.batch_committed(
            app=app, amounts_by_operation=amounts, seconds=time.perf_counter() - started
        )
        log_each = decision_log.isEnabledFor(logging.INFO)
        receivers = entry_posted.has_listeners(LedgerEntry)
        for entry in new_entries:
            if log_each:
                _log_entry("posted", entry, actor)
            if receivers:
                for receiver, error in entry_posted.send_robust(sender=LedgerEntry, entry=entry):
                    if isinstance(error, Exception):
                        logger.error(
                            "entry_posted receiver %r failed",
                            receiver,
                            exc_info=(type(error), error, None),
                        )

    if new_entries:
        transaction.on_commit(after_commit, robust=True)
    return results
