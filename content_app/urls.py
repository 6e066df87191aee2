from ledger_core.api import ledger_urls

from .api import ContentLedgerViewSet

app_name = "content"

urlpatterns = [
    *ledger_urls(ContentLedgerViewSet, basename="ledger"),
]
