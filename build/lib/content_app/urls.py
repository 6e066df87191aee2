from rest_framework.routers import SimpleRouter

from ledger_core.api import ledger_urls

from .api import ContentItemViewSet, ContentLedgerViewSet

app_name = "content"

router = SimpleRouter()
router.register("items", ContentItemViewSet, basename="item")

urlpatterns = [
    *ledger_urls(ContentLedgerViewSet),
    *router.urls,
]
