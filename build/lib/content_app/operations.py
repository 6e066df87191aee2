"""The content app's ledger operations: the shared ones plus content payments."""

from django.utils.translation import gettext_lazy as _

from ledger_core.operations import OWNER_OR_MANAGER, LedgerOperation, OperationPolicy


class ContentOperation(LedgerOperation):
    DAILY_REWARD = "DAILY_REWARD", _("Daily reward")
    SIGNUP_CREDIT = "SIGNUP_CREDIT", _("Signup credit")
    CREDIT_SPEND = "CREDIT_SPEND", _("Credit spend")
    CREDIT_ADD = "CREDIT_ADD", _("Credit add")
    CONTENT_CREATION = "CONTENT_CREATION", _("Content creation")
    CONTENT_ACCESS = "CONTENT_ACCESS", _("Content access")


POLICIES = {
    ContentOperation.CONTENT_CREATION: OperationPolicy(amount=-5, posters=OWNER_OR_MANAGER),
    ContentOperation.CONTENT_ACCESS: OperationPolicy(amount=0, posters=OWNER_OR_MANAGER),
}
