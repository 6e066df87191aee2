"""Base classes consumer apps build their ledger API from.

A consumer app's ledger endpoints are a subclass of ``LedgerViewSet`` naming
its app label, mounted with ``ledger_urls()``.
"""

from .views import LedgerViewSet, ledger_urls, request_actor

__all__ = ["LedgerViewSet", "ledger_urls", "request_actor"]
