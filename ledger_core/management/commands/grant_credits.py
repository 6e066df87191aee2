"""Grant credits from the command line: one owner, or a CSV file of many.

Every row goes through the same rules as the API (``entry_prepare`` with a
manager's rights, then ``entry_post_batch``). A CSV file is validated in full
first; if any row is bad, every bad line is reported and nothing is granted.
Otherwise all rows are granted in one transaction (all or nothing), in chunks
with a progress bar, and a re-run of the same file replays instead of paying
twice. ``--expires-at`` (or an ``expires_at`` column) makes the grants expiring
credits, as ``expires_at`` does in the API.
"""

from __future__ import annotations

import csv
import getpass
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.dateparse import parse_datetime

from ledger_core.actors import Actor
from ledger_core.conf import ledger_settings
from ledger_core.exceptions import BatchRefused, LedgerError
from ledger_core.operations import registry
from ledger_core.selectors import owners_unknown
from ledger_core.services import EntryRequest, entry_post_batch, entry_prepare

CHUNK = 10_000
REQUIRED_COLUMNS = ("owner_id", "amount", "nonce")


def progress_bar(done: int, total: int, width: int = 40) -> str:
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


class Command(BaseCommand):
    help = "Grant credits to one owner (--owner/--amount/--nonce) or from a CSV file (--csv)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", help="owner id (single grant)")
        parser.add_argument("--amount", help="amount (single grant)")
        parser.add_argument("--nonce", help="idempotency key (single grant)")
        parser.add_argument("--operation", default="CREDIT_ADD", help="default: CREDIT_ADD")
        parser.add_argument(
            "--app",
            default=None,
            help="ledger app label (default: settings.LEDGER_COMMAND_APP)",
        )
        parser.add_argument(
            "--csv",
            dest="csv_path",
            help="CSV with header owner_id,amount,nonce[,operation][,expires_at]",
        )
        parser.add_argument(
            "--expires-at",
            help="ISO 8601 instant with a time zone (e.g. 2027-01-01T00:00:00Z): the credits "
            "expire then (a CSV row's expires_at, if any, wins)",
        )
        parser.add_argument("--reason", default="", help="stored in each entry's metadata")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--allow-new-owners",
            action="store_true",
            help="grant to owners that have no ledger and no user yet (refused otherwise, "
            "so that a typo does not open a new wallet)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        app = options["app"] or ledger_settings.COMMAND_APP
        if not app:
            raise CommandError("--app is required (no LEDGER_COMMAND_APP setting)")
        if registry.get_app(app) is None:
            raise CommandError(f"unknown app {app!r} (known apps: {registry.known_labels()})")
        actor = Actor(
            name=f"cli:grant_credits:{_os_user()}"[:200],
            can_post_any=True,
            can_view_any=True,
        )
        metadata = (
            {"reason": options["reason"], "via": "grant_credits"}
            if options["reason"]
            else {"via": "grant_credits"}
        )
        if options["csv_path"]:
            if any(options[k] for k in ("owner", "amount", "nonce")):
                raise CommandError("use either --csv or --owner/--amount/--nonce, not both")
            rows = self._read_csv(
                Path(options["csv_path"]), options["operation"], options["expires_at"], metadata
            )
        else:
            missing = [k for k in ("owner", "amount", "nonce") if not options[k]]
            if missing:
                raise CommandError(
                    "a single grant needs --owner, --amount and --nonce "
                    f"(missing: {', '.join('--' + m for m in missing)}); or give --csv FILE"
                )
            rows = [
                (
                    0,
                    {
                        "owner_id": options["owner"],
                        "amount": options["amount"],
                        "nonce": options["nonce"],
                        "operation": options["operation"],
                        "expires_at": options["expires_at"] or "",
                    },
                )
            ]
            rows = [(line, _request(raw, metadata)) for line, raw in rows]
        single = not options["csv_path"]
        requests, lines = self._validate(rows, app, actor, single=single)
        if not options["allow_new_owners"]:
            unknown = owners_unknown(owner_ids=[r.owner_id for r in requests])
            if unknown:
                shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
                raise CommandError(
                    f"{len(unknown)} owner(s) have no ledger and no user: {shown}; nothing was "
                    "granted (check for typos, or pass --allow-new-owners)"
                )
        self._grant(requests, lines, app, actor, show_progress=not options["no_progress"])

    # -- reading and validating --------------------------------------------
    def _read_csv(
        self, path: Path, default_operation: str, default_expires_at: str | None, metadata: dict
    ) -> list:
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            rows = self._rows(path, default_operation, default_expires_at, metadata)
        except UnicodeDecodeError:
            raise CommandError(f"{path}: not UTF-8 text (save the sheet as CSV UTF-8)") from None
        except csv.Error as exc:
            raise CommandError(f"{path}: not a readable CSV file ({exc})") from None
        if not rows:
            raise CommandError(f"{path}: no rows")
        return rows

    def _rows(
        self, path: Path, default_operation: str, default_expires_at: str | None, metadata: dict
    ) -> list:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CommandError(
                    f"{path}: header must be owner_id,amount,nonce[,operation][,expires_at] "
                    f"(missing: {', '.join(missing)})"
                )
            reader.fieldnames = header
            rows = []
            for raw in reader:
                line = reader.line_num
                raw = {k: (v or "").strip() for k, v in raw.items() if k is not None}
                raw.setdefault("operation", "")
                raw["operation"] = raw["operation"] or default_operation
                raw["expires_at"] = raw.get("expires_at") or default_expires_at or ""
                rows.append((line, _request(raw, metadata)))
        return rows

    def _validate(
        self, rows: list, app: str, actor: Actor, single: bool
    ) -> tuple[list[EntryRequest], list[int]]:
        problems: list[str] = []
        seen: dict[tuple[str, str], tuple[int, str]] = {}
        requests: list[EntryRequest] = []
        lines: list[int] = []
        for line, request in rows:
            where = "" if single else f"line {line}: "
            if isinstance(request, str):
                problems.append(f"{where}{request}")
                continue
            try:
                prepared = entry_prepare(
                    owner_id=request.owner_id,
                    operation=request.operation,
                    nonce=request.nonce,
                    app=app,
                    actor=actor,
                    amount=request.amount,
                    metadata=request.metadata,
                    direct=True,
                    expires_at=request.expires_at,
                )
            except LedgerError as exc:
                allowed = exc.extra.get("allowed")
                hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
                problems.append(f"{where}{exc.detail}{hint}")
                continue
            key = (request.owner_id, request.nonce)
            if key in seen and seen[key][1] != prepared.fingerprint:
                problems.append(
                    f"{where}nonce {request.nonce!r} for {request.owner_id!r} is also used on "
                    f"line {seen[key][0]} with a different amount or operation"
                )
                continue
            seen.setdefault(key, (line, prepared.fingerprint))
            requests.append(request)
            lines.append(line)
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(
                f"{len(problems)} bad row(s); nothing was granted"
                if not single
                else "nothing was granted"
            )
        return requests, lines

    # -- granting ------------------------------------------------------------
    def _grant(
        self,
        requests: list[EntryRequest],
        lines: list[int],
        app: str,
        actor: Actor,
        show_progress: bool,
    ) -> None:
        started = time.perf_counter()
        created = replayed = credits = 0
        owners: set[str] = set()
        total = len(requests)
        # A progress bar on a terminal only, in the terminal's own colour.
        tty = show_progress and total > 1 and self.stderr.isatty()
        start = 0
        try:
            with transaction.atomic():
                for start in range(0, total, CHUNK):
                    chunk = requests[start : start + CHUNK]
                    results = entry_post_batch(app=app, actor=actor, entries=chunk, atomic=True)
                    for result in results:
                        if result.replayed:
                            replayed += 1
                        else:
                            created += 1
                            credits += result.entry.amount
                            owners.add(result.entry.owner_id)
                    if tty:
                        self.stderr.write(
                            "\r" + progress_bar(min(start + CHUNK, total), total),
                            style_func=str,
                            ending="",
                        )
        except BatchRefused as exc:
            if tty:
                self.stderr.write("")
            line = lines[start + exc.index]
            where = f"line {line}: " if line else ""
            raise CommandError(f"{where}{exc.error.detail}; nothing was granted") from None
        if tty:
            self.stderr.write("")
        elapsed = time.perf_counter() - started
        rate = total / elapsed if elapsed > 0 else float(total)
        self.stdout.write(
            f"granted {created} entr{'y' if created == 1 else 'ies'} "
            f"({credits:+d} credits) to {len(owners)} owner(s); {replayed} replay(s) of earlier "
            f"grants; {total} row(s) in {elapsed:.2f}s ({rate:.0f} rows/s)"
        )


def _request(raw: dict[str, str], metadata: dict) -> EntryRequest | str:
    amount_text = (raw.get("amount") or "").strip()
    try:
        amount = int(amount_text)
    except ValueError:
        return f"amount {amount_text!r} is not an integer"
    expires_text = (raw.get("expires_at") or "").strip()
    expires_at: datetime | None = None
    if expires_text:
        try:
            expires_at = parse_datetime(expires_text)
        except ValueError:
            expires_at = None
        if expires_at is None or expires_at.tzinfo is None:
            return (
                f"expires_at {expires_text!r} is not an ISO 8601 instant with a time zone "
                "(e.g. 2027-01-01T00:00:00Z)"
            )
    return EntryRequest(
        owner_id=raw.get("owner_id") or "",
        operation=raw.get("operation") or "CREDIT_ADD",
        nonce=raw.get("nonce") or "",
        amount=amount,
        metadata=metadata,
        expires_at=expires_at,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"
