"""The content app's HTTP API."""

from ledger_core.api import LedgerViewSet


class ContentLedgerViewSet(LedgerViewSet):
    """Ledger endpoints accepting the content app's operations."""

    app_label = "content"
