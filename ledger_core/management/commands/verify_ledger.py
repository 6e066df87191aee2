"""Reconcile the ledger: recompute every owner's balance from the entries.

Checks, per owner: the sum of entry amounts equals ``Balance.balance``; the
number of entries equals ``Balance.version``; ``Balance.held`` equals what
the owner's pending holds reserve and is at most the balance; every credit lot
adds up (amount = rest + held + consumed + expired, its CREDIT_EXPIRY entries
= expired) and ``lot_credits`` is what the owner's lots hold; every entry's ``balance_after``
continues the previous one; every entry's hash links it to the owner's
previous entry (``ledger_core.chain``; the first broken link is reported by
owner, seq and entry id); no running balance is negative; no
entries without a balance row and no non-zero balance without entries; and
no stored event position ahead of the database's transaction ids.
Streams entries and balances in owner order through server-side cursors (a
merge join), so memory stays flat on any table size. Exits 1 if anything is off.

``--loop SECONDS`` keeps it running as a worker (docker-compose's
``ledger-verifier``): a check, then a pause, again and again; with
``--metrics-port`` it serves the last check's result as gauges, and
Prometheus alerts when a check finds a discrepancy or none has finished for
too long. Tamper evidence needs someone to look: this is who looks. Each
check reads in one snapshot from beginning to end, which keeps VACUUM from
removing row versions that die meanwhile: on a large ledger, choose the
pause with that in mind.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from prometheus_client import Gauge

from ledger_core import chain
from ledger_core.exceptions import LedgerError
from ledger_core.management.workers import add_worker_arguments, run, serve_metrics
from ledger_core.models import (
    Balance,
    CreditLot,
    HoldEvent,
    HoldStatus,
    LedgerEntry,
    LedgerHold,
)
from ledger_core.selectors import owners_unknown
from ledger_core.validation import owner_id_validate

CHUNK = 5000
# The verifier's gauges, served by --metrics-port with --loop: Prometheus
# alerts on a discrepancy, and on a check that has not finished for too long.
DISCREPANCIES = Gauge(
    "ledger_verify_discrepancies",
    "Discrepancies the last finished check found (0: the ledger is consistent).",
)
LAST_RUN = Gauge(
    "ledger_verify_last_run_timestamp_seconds",
    "When the verifier last finished a check (Unix time; 0 before its first).",
)
INTERVAL = Gauge("ledger_verify_interval_seconds", "The pause between two checks (--loop SECONDS).")
# What the owner's pending holds reserve (expired ones included until
# released): what Balance.held must say.
_PENDING_HOLDS = Coalesce(
    Subquery(
        LedgerHold.objects.filter(owner_id=OuterRef("owner_id"), status=HoldStatus.PENDING)
        .values("owner_id")
        .annotate(total=-Sum("amount"))
        .values("total")
    ),
    0,
)
_END = object()


_RESERVED = f"""
SELECT (part->>'entry')::bigint AS lot, sum((part->>'amount')::bigint) AS amount
FROM {LedgerHold._meta.db_table} AS h, jsonb_array_elements(h.reserved) AS part
WHERE h.status = 'pending' GROUP BY 1
"""  # noqa: S608
_LOTS_SQL = f"""
WITH reserved AS ({_RESERVED}), expiries AS (
    SELECT (metadata->>'lot')::bigint AS lot, -sum(amount) AS amount
    FROM {LedgerEntry._meta.db_table} WHERE operation = 'CREDIT_EXPIRY' GROUP BY 1
)
SELECT l.owner_id, l.entry, l.amount, l.remaining, coalesce(r.amount, 0), l.consumed, l.expired,
    coalesce(x.amount, 0)
FROM {CreditLot._meta.db_table} AS l
LEFT JOIN reserved AS r ON r.lot = l.entry LEFT JOIN expiries AS x ON x.lot = l.entry
{{where}} ORDER BY l.owner_id, l.entry
"""  # noqa: S608
_LOT_CREDITS_SQL = f"""
WITH reserved AS ({_RESERVED}), held AS (
    SELECT l.owner_id, sum(l.remaining + coalesce(r.amount, 0)) AS total
    FROM {CreditLot._meta.db_table} AS l LEFT JOIN reserved AS r ON r.lot = l.entry
    GROUP BY l.owner_id
)
SELECT b.owner_id, b.lot_credits, coalesce(held.total, 0)
FROM {Balance._meta.db_table} AS b LEFT JOIN held ON held.owner_id = b.owner_id
{{where}} {{conjunction}} b.lot_credits <> coalesce(held.total, 0) ORDER BY b.owner_id
"""  # noqa: S608
# The newest event position stored, and the transaction ids this database
# has reached: past every transaction that has ended (the snapshot's xmax)
# and past this one (whose rows a caller's transaction may hold). A stored
# position at or past that was not made here.
_POSITIONS_SQL = f"""
SELECT greatest(
    (SELECT max(xid) FROM {LedgerEntry._meta.db_table}),
    (SELECT max(xid) FROM {HoldEvent._meta.db_table})
), greatest(
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
    pg_current_xact_id_if_assigned()::text::bigint + 1
)
"""  # noqa: S608
_UNSWEPT_SQL = f"""
SELECT count(*) FROM {CreditLot._meta.db_table} AS l
WHERE l.remaining > 0 AND l.expires_at <= clock_timestamp() {{where}}
"""  # noqa: S608


# The fields an entry's hash covers, besides owner_id, amount and balance_after.
_CHAIN_FIELDS = (
    "seq", "app", "operation", "nonce", "created_at", "reverses", "hold", "expires_at",
    "metadata", "consumed", "prev_hash", "hash",
)  # fmt: skip


def _link_problem(entry: Any, head: str, seq: int) -> str | None:
    """What is wrong with ``entry`` as the ``seq``-th link after ``head``, or None."""
    if entry.seq != seq:
        return f"seq {entry.seq} where {seq} was due (an entry missing or added)"
    if entry.prev_hash != head:
        return "prev_hash is not the previous entry's hash (an entry missing or changed)"
    if entry.hash != chain.hash_of(entry, head):
        return "hash does not match the entry's contents (the entry was changed)"
    return None


_HASH = re.compile(r"[0-9a-f]{64}")


def _count(value: str) -> int:
    """A number of lines for ``--max-report``: 0 or more."""
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0 or more)")
    return int(value)


class Command(BaseCommand):
    help = "Recompute balances from entries and report every discrepancy (exit 1 if any)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", help="check this owner only")
        parser.add_argument(
            "--since-head",
            metavar="OWNER=HASH",
            help="check OWNER only, and that HASH (a head a client kept) is a link of its "
            "intact chain: its history since then is as it was",
        )
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--swept",
            action="store_true",
            help="expire_credits has just run: a lot past its expiry still holding credits "
            "is a discrepancy (else a note)",
        )
        parser.add_argument(
            "--max-report", type=_count, default=1000, help="discrepancies printed at most"
        )
        add_worker_arguments(
            parser,
            loop_help="keep running: check again every SECONDS after a pass ends, and serve "
            "the result as gauges on --metrics-port (a long-running worker; never exits 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = options["owner"]
        self.checkpoint: str | None = None
        if options["since_head"]:
            owner, _, checkpoint = options["since_head"].partition("=")
            self.checkpoint = checkpoint.lower()
            if not _HASH.fullmatch(self.checkpoint):
                raise CommandError("--since-head takes OWNER=HASH (64 hex digits)")
        if owner is not None:
            try:
                owner_id_validate(owner)
            except LedgerError as exc:
                raise CommandError(exc.detail) from None
            if owners_unknown(owner_ids=[owner]):
                raise CommandError(f"owner {owner!r} has no ledger and no user; nothing to check")
        # Progress on a terminal only, in the terminal's own colour.
        self.progress = not options["no_progress"] and self.stderr.isatty()
        self.max_report = options["max_report"]
        serve_metrics(options)
        if options["loop"] is None:
            if self.verify(owner, swept=options["swept"]):
                sys.exit(1)
            return
        INTERVAL.set(options["loop"])
        run(options["loop"], lambda: self.watch(owner, swept=options["swept"]),
            name="the ledger verifier")  # fmt: skip

    def watch(self, owner: str | None, *, swept: bool) -> bool:
        """One pass of ``--loop``: the check, its result in the gauges."""
        problems = self.verify(owner, swept=swept)
        DISCREPANCIES.set(problems)
        LAST_RUN.set(time.time())
        return False

    def verify(self, owner: str | None, *, swept: bool) -> int:
        """Check the whole ledger (or ``owner``'s), print what is off and a
        summary; return how many discrepancies were found."""
        self.problems = 0
        self.checkpoint_seen = False
        entries = LedgerEntry.objects.order_by("owner_id", "id")
        balances = Balance.objects.order_by("owner_id")
        if owner is not None:
            entries = entries.filter(owner_id=owner)
            balances = balances.filter(owner_id=owner)
        started = time.perf_counter()
        # Entries and balances must come from one snapshot, or posts landing
        # during the run would show up as false differences: the
        # transaction is REPEATABLE READ (its first statement sets that; inside
        # a caller's transaction, the caller's isolation applies).
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if outermost:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            owners, entry_count = self._merge(
                entries.values_list(
                    "owner_id", "id", "amount", "balance_after", *_CHAIN_FIELDS
                ).iterator(chunk_size=CHUNK),
                balances.annotate(reserved=_PENDING_HOLDS)
                .values_list("owner_id", "balance", "version", "held", "reserved", "head_hash")
                .iterator(chunk_size=CHUNK),
            )
            unswept = self._lots(owner)
            self._positions()
        if self.checkpoint and not self.checkpoint_seen:
            self.report(
                owner, f"checkpoint {self.checkpoint} is not a link of the owner's intact chain"
            )
        elapsed = time.perf_counter() - started
        if self.progress:
            self.stderr.write("", style_func=str)
        summary = (
            f"checked {owners} owner(s), {entry_count} entr{'y' if entry_count == 1 else 'ies'} "
            f"in {elapsed:.2f}s: "
        )
        if unswept:
            message = f"{unswept} credit lot(s) past their expiry still hold credits"
            if swept:
                self.report("*", message + " after a sweep")
            else:
                self.stdout.write(f"note: {message} (expire_credits has not swept them yet)")
        if self.problems:
            self.stdout.write(
                summary + f"{self.problems} discrepanc{'y' if self.problems == 1 else 'ies'}"
            )
        else:
            self.stdout.write(summary + "ledger consistent")
        return self.problems

    def _lots(self, owner: str | None) -> int:
        """Check every credit lot: amount = rest + held by pending holds +
        consumed + expired, its CREDIT_EXPIRY entries add up to ``expired``,
        and each owner's ``lot_credits`` is the lots' rest + held. Returns how
        many lots past their expiry still hold credits."""
        where = "WHERE l.owner_id = %(owner)s" if owner is not None else ""
        with connection.cursor() as cursor:
            cursor.execute(_LOTS_SQL.format(where=where), {"owner": owner})
            for owner_id, lot, amount, remaining, reserved, consumed, expired, entries in cursor:
                if amount != remaining + reserved + consumed + expired:
                    self.report(
                        owner_id,
                        f"lot {lot}: amount {amount} but rest {remaining} + held {reserved} + "
                        f"consumed {consumed} + expired {expired}",
                    )
                if entries != expired:
                    self.report(
                        owner_id,
                        f"lot {lot}: expired {expired} but its expiry entries say {entries}",
                    )
            cursor.execute(
                _LOT_CREDITS_SQL.format(
                    where=where.replace("l.", "b."), conjunction="AND" if where else "WHERE"
                ),
                {"owner": owner},
            )
            for owner_id, lot_credits, total in cursor:
                self.report(owner_id, f"lot_credits {lot_credits} but the lots hold {total}")
            cursor.execute(
                _UNSWEPT_SQL.format(where=where.replace("WHERE", "AND")), {"owner": owner}
            )
            return cursor.fetchone()[0]

    def _positions(self) -> None:
        """The event feed orders events by the id of the transaction that
        stored them. After a restore from a logical dump (or of an older
        backup) the database may hand out ids below those already stored:
        new events would sort before old ones, and consumers' cursors would
        skip them."""
        with connection.cursor() as cursor:
            cursor.execute(_POSITIONS_SQL)
            newest, next_xid = cursor.fetchone()
        if newest is not None and newest >= next_xid:
            self.report(
                "*",
                f"stored events carry transaction ids up to {newest}, but this database "
                f"has reached only {next_xid}: the event feed would put new events "
                "before old ones (restored from a logical dump?); see docs/design.md",
            )

    def report(self, owner_id: str, message: str) -> None:
        self.problems += 1
        if self.problems <= self.max_report:
            self.stdout.write(f"DISCREPANCY owner={owner_id}: {message}")
        elif self.problems == self.max_report + 1:
            self.stdout.write("... more discrepancies not shown (--max-report)")

    def _first_owner(self, entry: Any, balance: Any) -> str:
        """The owner that comes first of the two streams' next rows, in the
        order PostgreSQL sorted them: the owner ids' collation, which may not
        be Python's (``en_US``, the usual default, puts ``ab`` before ``Ab``).
        The heads differ only where one stream has an owner the other lacks (a
        balance row opened at 0 and never posted to, which is consistent, or a
        discrepancy), so PostgreSQL is asked only then."""
        if entry is _END or balance is _END:
            return (balance if entry is _END else entry)[0]
        if entry[0] == balance[0]:
            return entry[0]
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::text < %s::text", [entry[0], balance[0]])
            return entry[0] if cursor.fetchone()[0] else balance[0]

    def _merge(self, entries: Iterator, balances: Iterator) -> tuple[int, int]:
        owners = entry_count = 0
        next_entry = next(entries, _END)
        next_balance = next(balances, _END)
        while next_entry is not _END or next_balance is not _END:
            owner_id = self._first_owner(next_entry, next_balance)
            total = count = 0
            negative_reported = False
            head, chain_broken = chain.GENESIS, False
            while next_entry is not _END and next_entry[0] == owner_id:
                _, entry_id, amount, balance_after, *linked = next_entry
                total += amount
                count += 1
                if not chain_broken:
                    entry = SimpleNamespace(
                        owner_id=owner_id, amount=amount, balance_after=balance_after,
                        **dict(zip(_CHAIN_FIELDS, linked, strict=True)),
                    )  # fmt: skip
                    problem = _link_problem(entry, head, count)
                    if problem:
                        self.report(owner_id, f"hash chain broken at seq {count} (entry "
                                              f"{entry_id}): {problem}")  # fmt: skip
                        chain_broken = True
                    head = entry.hash
                    if head == self.checkpoint:
                        self.checkpoint_seen = True
                if balance_after != total:
                    self.report(
                        owner_id,
                        f"entry {entry_id}: balance_after {balance_after} but the entries "
                        f"before it add up to {total}",
                    )
                if total < 0 and not negative_reported:
                    self.report(owner_id, f"entry {entry_id}: running balance {total} < 0")
                    negative_reported = True
                next_entry = next(entries, _END)
            entry_count += count
            if next_balance is not _END and next_balance[0] == owner_id:
                _, balance, version, held, reserved, head_hash = next_balance
                if not chain_broken and head_hash != head:
                    self.report(owner_id, f"head_hash {head_hash} is not the newest entry's hash")
                if held != reserved:
                    self.report(owner_id, f"held {held} but pending holds reserve {reserved}")
                if held > balance:
                    self.report(owner_id, f"held {held} > balance {balance}")
                if balance != total:
                    self.report(owner_id, f"balance {balance} but entries add up to {total}")
                if version != count:
                    self.report(owner_id, f"version {version} but {count} entries")
                if balance < 0:
                    self.report(owner_id, f"balance {balance} < 0")
                next_balance = next(balances, _END)
            elif count:
                self.report(owner_id, f"{count} entries but no balance row")
            owners += 1
            if self.progress and owners % 1000 == 0:
                self.stderr.write(
                    f"\rchecked {owners} owners, {entry_count} entries", style_func=str, ending=""
                )
        return owners, entry_count
