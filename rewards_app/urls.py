from ledger_core.api import ledger_urls

from .api import RewardsLedgerViewSet

app_name = "rewards"

urlpatterns = [
    *ledger_urls(RewardsLedgerViewSet, basename="ledger"),
]
