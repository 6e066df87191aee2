from django.urls import path

from ledger_core.api import ledger_urls

from .api import DailyClaimView, ReferralView, RewardsLedgerViewSet

app_name = "rewards"

urlpatterns = [
    *ledger_urls(RewardsLedgerViewSet),
    path("daily/", DailyClaimView.as_view(), name="daily"),
    path("referrals/", ReferralView.as_view(), name="referrals"),
]
