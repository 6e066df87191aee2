"""Base classes consumer apps build their ledger API from.

A consumer app's ledger endpoints are a subclass of ``LedgerViewSet`` naming
its operation class, mounted with ``ledger_urls()``. Its own write endpoints
use ``domain_nonce_field()`` and answer with ``replay_response()``.
"""

from .serializers import domain_nonce_field
from .views import (
    REPLAY_HEADER,
    LedgerViewSet,
    ledger_urls,
    list_route_segments,
    replay_response,
    request_actor,
)

__all__ = [
    "REPLAY_HEADER",
    "LedgerViewSet",
    "domain_nonce_field",
    "ledger_urls",
    "list_route_segments",
    "replay_response",
    "request_actor",
]
