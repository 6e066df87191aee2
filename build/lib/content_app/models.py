"""Content items, paid for with credits (CONTENT_CREATION) when created."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ContentItem(models.Model):
    """A piece of content. Created in the same transaction as its payment entry."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="content_items"
    )
    title = models.CharField(max_length=200)
    body = models.TextField(max_length=20_000)
    # The client's idempotency key for the creation request, if it sent one.
    nonce = models.CharField(max_length=96, null=True, blank=True)  # noqa: DJ001
    payment_entry_id = models.BigIntegerField(help_text="the CONTENT_CREATION ledger entry")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "nonce"],
                condition=Q(nonce__isnull=False),
                name="content_item_owner_nonce_uniq",
            )
        ]
        indexes = [models.Index(fields=["owner", "-id"], name="content_item_owner_idx")]

    def __str__(self) -> str:
        return self.title
