"""Writes to the ledger: the one import surface of its services.

Every credit movement goes through these: ``entry_post`` (posting),
``entry_post_batch`` (batches), ``entry_reverse`` (reversals) and the holds
(``hold_place``, ``hold_capture``, ``hold_void``, ``due_holds_sweep``). Each module
says its own design decision; views, the admin and commands import from here.
"""

from .batches import BatchItemResult, EntryRequest, entry_post_batch
from .expiry import due_holds_sweep, due_lots_sweep, sweep_lag_seconds
from .holds import (
    CaptureResult,
    HoldResult,
    hold_capture,
    hold_place,
    hold_void,
    holdable_operations,
)
from .posting import (
    PostResult,
    PreparedEntry,
    daily_limit_frees_at,
    entry_fingerprint,
    entry_post,
    entry_prepare,
    max_entry_amount,
    next_utc_midnight,
    operation_policy_get,
)
from .reversals import entry_reverse

__all__ = [
    "BatchItemResult",
    "CaptureResult",
    "HoldResult",
    "due_holds_sweep",
    "due_lots_sweep",
    "sweep_lag_seconds",
    "hold_capture",
    "hold_place",
    "hold_void",
    "holdable_operations",
    "EntryRequest",
    "PostResult",
    "PreparedEntry",
    "daily_limit_frees_at",
    "entry_fingerprint",
    "entry_post",
    "entry_post_batch",
    "entry_prepare",
    "entry_reverse",
    "max_entry_amount",
    "next_utc_midnight",
    "operation_policy_get",
]
