"""The rewards app's ledger operations: the shared ones plus referral bonuses."""

from django.utils.translation import gettext_lazy as _

from ledger_core.operations import MANAGER, LedgerOperation, OperationPolicy


class RewardOperation(LedgerOperation):
    DAILY_REWARD = "DAILY_REWARD", _("Daily reward")
    SIGNUP_CREDIT = "SIGNUP_CREDIT", _("Signup credit")
    CREDIT_SPEND = "CREDIT_SPEND", _("Credit spend")
    CREDIT_ADD = "CREDIT_ADD", _("Credit add")
    REFERRAL_BONUS = "REFERRAL_BONUS", _("Referral bonus")


POLICIES = {
    # Once per referred owner, across all referrers: that is a fact about the
    # referral, so the rewards app's Referral table (unique on the referred
    # user) enforces it, and the bonus is posted only through the referrals
    # endpoint, never through the generic ledger POST.
    RewardOperation.REFERRAL_BONUS: OperationPolicy(amount=5, posters=MANAGER, direct=False),
}
