"""The rewards app's HTTP API."""

from ledger_core.api import LedgerViewSet


class RewardsLedgerViewSet(LedgerViewSet):
    """Ledger endpoints accepting the rewards app's operations."""

    app_label = "rewards"
