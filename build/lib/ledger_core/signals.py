"""Signals sent by the ledger, always after the posting transaction commits."""

from django.dispatch import Signal

#: Sent once per newly stored entry after commit (never for replays or
#: rolled-back posts). Arguments: ``entry`` (LedgerEntry).
entry_posted = Signal()
