"""Referrals: who brought whom, once per referred user."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Referral(models.Model):
    """A referral bonus paid to ``referrer`` for bringing in ``referred``.

    ``referred`` is unique: a user can earn one referral bonus for somebody,
    whoever claims it, and concurrent claims for the same user give one winner.
    """

    referrer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referrals_made"
    )
    referred = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referral"
    )
    nonce = models.CharField(max_length=96, null=True, blank=True)  # noqa: DJ001
    bonus_entry_id = models.BigIntegerField(help_text="the REFERRAL_BONUS ledger entry")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)

    def __str__(self) -> str:
        return f"{self.referrer} referred {self.referred}"
