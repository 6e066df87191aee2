"""The site's own operations: only the shared ones (it posts the signup credit)."""

from django.utils.translation import gettext_lazy as _

from ledger_core.operations import LedgerOperation


class SiteOperation(LedgerOperation):
    DAILY_REWARD = "DAILY_REWARD", _("Daily reward")
    SIGNUP_CREDIT = "SIGNUP_CREDIT", _("Signup credit")
    CREDIT_SPEND = "CREDIT_SPEND", _("Credit spend")
    CREDIT_ADD = "CREDIT_ADD", _("Credit add")
