"""Prometheus metrics of the ledger.

Design decision: entries, credits and post latency are recorded from the
posting transaction's ``on_commit`` callback, so a post that is rolled back
(by the ledger or by the caller's own transaction) counts nothing.
Rejections and replays store nothing and are counted when they happen.
Operation labels come only from registered operations (anything else is
``other``) so that client input cannot blow up label cardinality.

Under gunicorn, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR)
aggregates these across workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .models import LEDGER_OPERATIONS
from .operations import registry

ENTRIES = Counter("ledger_entries", "Ledger entries stored (after commit).", ["app", "operation"])
CREDITS = Counter(
    "ledger_credits",
    "Credits moved by committed entries, as absolute amounts, by direction.",
    ["app", "operation", "direction"],
)
REJECTIONS = Counter(
    "ledger_rejections", "Ledger posts refused, by reason.", ["app", "operation", "reason"]
)
REPLAYS = Counter(
    "ledger_replays", "Idempotent replays (same nonce, same payload).", ["app", "operation"]
)
HOLDS = Counter(
    "ledger_holds",
    "Holds placed and resolved (after commit), by outcome: placed, captured, voided, expired.",
    ["app", "outcome"],
)
CREDITS_EXPIRED = Counter(
    "ledger_credits_expired",
    "Credits that expired unconsumed (CREDIT_EXPIRY entries, after commit).",
    ["app"],
)
POST_SECONDS = Histogram(
    "ledger_post_seconds",
    "Time from the start of a post to its commit.",
    ["app"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def operation_label(app: str, operation: object) -> str:
    if isinstance(operation, str) and (
        operation in LEDGER_OPERATIONS or registry.is_operation_of(app, operation)
    ):
        return operation
    return "other"


def app_label(app: object) -> str:
    return app if isinstance(app, str) and registry.get_app(app) is not None else "other"


def entry_committed(*, app: str, operation: str, amount: int, seconds: float) -> None:
    op = operation_label(app, operation)
    ENTRIES.labels(app, op).inc()
    if amount:
        CREDITS.labels(app, op, "credit" if amount > 0 else "debit").inc(abs(amount))
    POST_SECONDS.labels(app).observe(seconds)


def batch_committed(
    *, app: str, amounts_by_operation: dict[str, list[int]], seconds: float
) -> None:
    """A committed batch: entries and credits per operation, one latency sample."""
    for operation, amounts in amounts_by_operation.items():
        op = operation_label(app, operation)
        ENTRIES.labels(app, op).inc(len(amounts))
        credit = sum(a for a in amounts if a > 0)
        debit = -sum(a for a in amounts if a < 0)
        if credit:
            CREDITS.labels(app, op, "credit").inc(credit)
        if debit:
            CREDITS.labels(app, op, "debit").inc(debit)
    POST_SECONDS.labels(app).observe(seconds)


def entry_rejected(*, app: str, operation: object, reason: str) -> None:
    REJECTIONS.labels(app_label(app), operation_label(app, operation), reason).inc()


def entry_replayed(*, app: str, operation: str) -> None:
    REPLAYS.labels(app, operation_label(app, operation)).inc()


def hold_resolved(*, app: str, outcome: str) -> None:
    """A committed hold change: ``placed``, ``captured``, ``voided`` or ``expired``."""
    HOLDS.labels(app_label(app), outcome).inc()


def credits_expired(*, app: str, entries: int, amount: int) -> None:
    """Committed ``CREDIT_EXPIRY`` entries of ``amount`` credits in all (positive)."""
    app = app_label(app)
    ENTRIES.labels(app, "CREDIT_EXPIRY").inc(entries)
    CREDITS.labels(app, "CREDIT_EXPIRY", "debit").inc(amount)
    CREDITS_EXPIRED.labels(app).inc(amount)
