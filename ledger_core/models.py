"""The append-only ledger and the materialised per-owner balance.

Design decision: ``Balance`` is the serialisation point. A post changes the
owner's balance row with one conditional UPDATE (or an upsert for credits) and
inserts the entry in the same short transaction, so posts for one owner queue
on that row lock while posts for different owners never touch each other. The
database states the invariants as well: unique (owner_id, nonce), a unique
limit key for once-per-day/once-per-owner operations, CHECK (balance >= 0), and
a trigger (migration 0002) that refuses UPDATE and DELETE of entries. Every
unique key and secondary index leads with ``owner_id`` so both tables can be
distributed by owner; the surrogate ``id`` primary key of entries is the one
exception and would become (owner_id, id) when distributing.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from .chain import GENESIS
from .operations import CREDIT_EXPIRY as CREDIT_EXPIRY  # the ledger's own operations
from .operations import LEDGER_OPERATIONS as LEDGER_OPERATIONS
from .operations import OPERATION_MAX_LENGTH
from .operations import REVERSAL as REVERSAL

OWNER_ID_MAX_LENGTH = 128
NONCE_MAX_LENGTH = 128
APP_LABEL_MAX_LENGTH = 64
LIMIT_KEY_MAX_LENGTH = 100

#: The fields of an entry that the API shows, the decision log line carries
#: and the admin's CSV export writes, in this order (the export adds created_by).
ENTRY_FIELDS = (
    "id", "owner_id", "app", "operation", "amount", "balance_after", "nonce", "metadata",
    "created_at", "reverses", "hold", "expires_at", "consumed", "seq", "prev_hash", "hash",
)  # fmt: skip


class CurrentTransactionId(models.Func):
    """PostgreSQL's id of the current transaction, as a bigint."""

    template = "pg_current_xact_id()::text::bigint"
    output_field = models.BigIntegerField()


class LedgerEntry(models.Model):
    """One credit movement. Never updated or deleted: corrections are new entries."""

    id = models.BigAutoField(primary_key=True)
    owner_id = models.CharField(max_length=OWNER_ID_MAX_LENGTH)
    app = models.CharField(max_length=APP_LABEL_MAX_LENGTH)
    # No ``choices=``: operations belong to consumer apps, and adding one must
    # never need a ledger_core migration.
    operation = models.CharField(max_length=OPERATION_MAX_LENGTH)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    nonce = models.CharField(max_length=NONCE_MAX_LENGTH)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of (app, operation, amount)")
    # NULL (not ""): entries without a limit must stay out of the partial unique key.
    limit_key = models.CharField(max_length=LIMIT_KEY_MAX_LENGTH, null=True, blank=True)  # noqa: DJ001
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, help_text="who posted it (user or system)")
    # The owner's balance version this entry made (1 for the first): entries of
    # one owner are numbered in the order they were applied, as are their
    # created_at times (taken from the database clock once the balance row is held).
    seq = models.BigIntegerField(null=True, help_text="the owner's version after this entry")
    # A REVERSAL entry names the entry it reverses (same owner; at most one
    # reversal per entry). A plain id, not a foreign key: every index starts
    # with owner_id.
    reverses = models.BigIntegerField(null=True, blank=True, help_text="id of the reversed entry")
    # The entry that captured a hold names it (at most one entry per hold).
    hold = models.BigIntegerField(null=True, blank=True, help_text="id of the captured hold")
    # A credit with an expiry is a lot (``CreditLot``); a debit names the lots
    # it consumed: [{"entry": <lot's entry id>, "amount": n}, ...].
    expires_at = models.DateTimeField(null=True, blank=True)
    consumed = models.JSONField(null=True, blank=True)
    # The owner's hash chain (``ledger_core.chain``): SHA-256 of the previous
    # entry's hash and this entry's canonical bytes, in hex.
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # The id of the transaction that stored the entry (PostgreSQL's, set by
    # the database): the event feed's order (``ledger_core.events``).
    xid = models.BigIntegerField(db_default=CurrentTransactionId(), editable=False)

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(
                fields=["owner_id", "nonce"], name="ledger_entry_owner_nonce_uniq"
            ),
            models.UniqueConstraint(
                fields=["owner_id", "limit_key"],
                condition=Q(limit_key__isnull=False),
                name="ledger_entry_owner_limit_uniq",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="ledger_entry_balance_after_gte_0"
            ),
            models.UniqueConstraint(
                fields=["owner_id", "reverses"],
                condition=Q(reverses__isnull=False),
                name="ledger_entry_owner_reverses_uniq",
            ),
            models.UniqueConstraint(
                fields=["owner_id", "hold"],
                condition=Q(hold__isnull=False),
                name="ledger_entry_owner_hold_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["owner_id", "-id"], name="ledger_entry_owner_id_idx"),
            models.Index(fields=["owner_id", "created_at"], name="ledger_entry_owner_time_idx"),
            # The event feed's scan (the one index not led by owner_id).
            models.Index(fields=["xid", "id"], name="ledger_entry_xid_idx"),
        ]
        permissions = [
            ("post_any_entry", "Can post entries to any owner's ledger"),
            ("view_any_ledger", "Can view any owner's ledger"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.operation} {self.amount:+d} (#{self.pk})"


class Balance(models.Model):
    """The owner's current balance: always the sum of the owner's entries."""

    owner_id = models.CharField(max_length=OWNER_ID_MAX_LENGTH, primary_key=True)
    balance = models.BigIntegerField(default=0)
    version = models.BigIntegerField(default=0, help_text="number of entries applied")
    updated_at = models.DateTimeField(default=timezone.now)
    # The credits reserved by the owner's pending holds, expired ones included
    # until they are released (by the owner's next write or ``expire_holds``):
    # debits are checked against ``balance - held`` in the same conditional
    # UPDATE, so the check needs no other row. Reads subtract only unexpired
    # holds (``selectors.balance_get``), so an expiry counts without any job.
    held = models.BigIntegerField(
        default=0, db_default=0, help_text="credits reserved by pending holds"
    )
    # The credits of the owner's lots not yet consumed or expired (reserved by
    # holds or not). 0: every credit is non-expiring, and a debit is the one
    # conditional UPDATE; otherwise debits consume lots (``services.lots``).
    lot_credits = models.BigIntegerField(
        default=0, db_default=0, help_text="credits of unexpired, unconsumed lots"
    )
    # The hash of the owner's newest entry (64 zeros before the first), and
    # the one before it (set in the same UPDATE, so the post's statement can
    # give the new entry its ``prev_hash``).
    head_hash = models.CharField(max_length=64, default=GENESIS, db_default=GENESIS)
    head_prev = models.CharField(max_length=64, default=GENESIS, db_default=GENESIS)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="ledger_balance_gte_0"),
            models.CheckConstraint(condition=Q(held__gte=0), name="ledger_balance_held_gte_0"),
            models.CheckConstraint(
                condition=Q(held__lte=models.F("balance")), name="ledger_balance_held_lte_balance"
            ),
            models.CheckConstraint(
                condition=Q(lot_credits__gte=0) & Q(lot_credits__lte=models.F("balance")),
                name="ledger_balance_lot_credits_range",
            ),
            models.CheckConstraint(
                condition=Q(version__gte=0), name="ledger_balance_version_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.balance}"


class HoldStatus(models.TextChoices):
    PENDING = "pending", "pending"
    CAPTURED = "captured", "captured"
    VOIDED = "voided", "voided"
    EXPIRED = "expired", "expired"


class LedgerHold(models.Model):
    """Credits reserved for a debit that may still fail: captured (one entry),
    voided or expired, at most once.

    A pending hold past ``expires_at`` is expired whatever ``status`` still
    says: reads and captures compare with the database clock, and the owner's
    next write or ``manage.py expire_holds`` writes the status.
    """

    id = models.BigAutoField(primary_key=True)
    owner_id = models.CharField(max_length=OWNER_ID_MAX_LENGTH)
    app = models.CharField(max_length=APP_LABEL_MAX_LENGTH)
    operation = models.CharField(max_length=OPERATION_MAX_LENGTH)
    # Signed like the entry it may become: negative.
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.PENDING)
    nonce = models.CharField(max_length=NONCE_MAX_LENGTH)
    fingerprint = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, default="")
    # The capturing entry (a plain id, like ``reverses``).
    entry = models.BigIntegerField(null=True, blank=True, help_text="id of the capturing entry")
    # What the hold reserves from credit lots, in consumption order:
    # [{"entry": <lot's entry id>, "amount": n}, ...]; the rest of it is
    # reserved from non-expiring credits.
    reserved = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "ledger hold"
        constraints = [
            models.UniqueConstraint(
                fields=["owner_id", "nonce"], name="ledger_hold_owner_nonce_uniq"
            ),
            models.CheckConstraint(condition=Q(amount__lt=0), name="ledger_hold_amount_lt_0"),
        ]
        indexes = [
            models.Index(fields=["owner_id", "-id"], name="ledger_hold_owner_id_idx"),
            # The owner's pending holds by expiry: held now, and due ones to release.
            models.Index(
                fields=["owner_id", "expires_at"],
                condition=Q(status="pending"),
                name="ledger_hold_owner_pending_idx",
            ),
            # The sweeper's scan.
            models.Index(
                fields=["expires_at"], condition=Q(status="pending"), name="ledger_hold_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.operation} {self.amount:+d} hold #{self.pk} ({self.status})"


class CreditLot(models.Model):
    """A credit that expires: what is left of it, and what became of the rest.

    ``amount`` = ``remaining`` + reserved by pending holds + ``consumed`` +
    ``expired`` (``verify_ledger`` checks it). Debits consume ``remaining``
    soonest expiry first, oldest entry first on ties; from ``expires_at`` on,
    ``remaining`` is gone and leaves the balance through ``CREDIT_EXPIRY``
    entries (``services.lots``).
    """

    entry = models.BigIntegerField(primary_key=True, help_text="id of the credit entry")
    owner_id = models.CharField(max_length=OWNER_ID_MAX_LENGTH)
    app = models.CharField(max_length=APP_LABEL_MAX_LENGTH)
    expires_at = models.DateTimeField()
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField(help_text="neither consumed, reserved nor expired")
    consumed = models.BigIntegerField(default=0)
    expired = models.BigIntegerField(default=0)
    expiries = models.IntegerField(default=0, help_text="CREDIT_EXPIRY entries posted")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(consumed__gte=0) & Q(expired__gte=0),
                name="ledger_lot_parts_gte_0",
            ),
        ]
        indexes = [
            # The owner's open lots in consumption order.
            models.Index(
                fields=["owner_id", "expires_at", "entry"],
                condition=Q(remaining__gt=0),
                name="ledger_lot_open_idx",
            ),
            # The sweeper's scan.
            models.Index(
                fields=["expires_at"], condition=Q(remaining__gt=0), name="ledger_lot_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"lot #{self.entry} of {self.owner_id}: {self.remaining}/{self.amount}"


class HoldEvent(models.Model):
    """A change of a hold (placed, captured, voided, expired), as the event
    feed shows it. Entries need no such row: they are their own events."""

    id = models.BigAutoField(primary_key=True)
    hold = models.BigIntegerField()
    owner_id = models.CharField(max_length=OWNER_ID_MAX_LENGTH)
    app = models.CharField(max_length=APP_LABEL_MAX_LENGTH)
    type = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    # The hold as the API shows it after the change.
    data = models.JSONField()
    xid = models.BigIntegerField(db_default=CurrentTransactionId(), editable=False)

    class Meta:
        indexes = [models.Index(fields=["xid", "id"], name="ledger_hold_event_xid_idx")]

    def __str__(self) -> str:
        return f"{self.type} hold #{self.hold}"


class WebhookSubscription(models.Model):
    """Where to send the event feed: a URL, which events, and how far it got.

    ``cursor`` is the feed position delivered and acknowledged so far; a
    worker (``manage.py deliver_webhooks``) sends the events after it in
    batches, signed with ``secret``, and keeps retrying with backoff until a
    2xx; a subscription failing longer than ``LEDGER_WEBHOOK_DISABLE_AFTER``
    seconds is disabled, with its last error kept. After a rotation that keeps
    the old secret for a while, deliveries carry a second signature with
    ``previous_secret`` until ``previous_secret_until``.
    """

    id = models.BigAutoField(primary_key=True)
    url = models.URLField(max_length=500)
    event_types = models.JSONField(default=list, blank=True, help_text="empty: every type")
    app = models.CharField(max_length=APP_LABEL_MAX_LENGTH, blank=True, help_text="empty: all")
    active = models.BooleanField(default=True)
    secret = models.CharField(max_length=64, editable=False)
    previous_secret = models.CharField(max_length=64, editable=False, blank=True, default="")
    previous_secret_until = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="until then, deliveries are signed with the replaced secret too",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)
    cursor = models.CharField(max_length=64, default="0.0.0")
    attempts = models.IntegerField(default=0, help_text="failed attempts in a row")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_success_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook subscription"

    def __str__(self) -> str:
        return f"webhook #{self.pk} -> {self.url}"

    def signing_secrets(self, now: datetime) -> list[str]:
        """What a delivery at ``now`` is signed with: the secret, then the one
        it replaced while a rotation keeps that."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None and now < until:
            return [self.secret, self.previous_secret]
        return [self.secret]
