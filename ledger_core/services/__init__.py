"""Writes to the ledger: the one import surface of its services.

Every credit movement goes through these: ``entry_post`` (posting),
``entry_post_batch`` (batches) and ``entry_reverse`` (reversals). Each module
says its own design decision; views, the admin and commands import from here.
"""

from .batches import BatchItemResult, EntryRequest, entry_post_batch
from .posting import (
    PostResult,
    PreparedEntry,
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
    "EntryRequest",
    "PostResult",
    "PreparedEntry",
    "entry_fingerprint",
    "entry_post",
    "entry_post_batch",
    "entry_prepare",
    "entry_reverse",
    "max_entry_amount",
    "next_utc_midnight",
    "operation_policy_get",
]
