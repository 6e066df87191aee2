"""Input and output shapes of the ledger API. No business rules here."""

from __future__ import annotations

import functools
import re
from typing import Any

from django.core.validators import RegexValidator
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from ..conf import ledger_settings
from ..models import (
    APP_LABEL_MAX_LENGTH,
    ENTRY_FIELDS,
    NONCE_MAX_LENGTH,
    OWNER_ID_MAX_LENGTH,
    HoldStatus,
)
from ..operations import OPERATION_MAX_LENGTH, all_operation_values, registry
from ..validation import (
    NONCE_RULE,
    OWNER_ID_RULE,
    is_valid_nonce,
    is_valid_owner_id,
    metadata_problem,
)

# ECMA-compatible forms of the rules, published as `pattern` in the schema.
OWNER_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.@+:\-]{1,128}$"
NONCE_PATTERN = r"^[!-~]{1,128}$"


class StrictCharField(serializers.CharField):
    """A string given as a JSON string: numbers, lists and objects are refused."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OwnerIdField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", OWNER_ID_MAX_LENGTH)
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("help_text", OWNER_ID_RULE)
        kwargs.setdefault("validators", [RegexValidator(OWNER_ID_PATTERN)])
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_valid_owner_id(value):
            raise serializers.ValidationError(f"Must be {OWNER_ID_RULE}.")
        return value


class NonceField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", NONCE_MAX_LENGTH)
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("help_text", "Idempotency key: " + NONCE_RULE)
        kwargs.setdefault("validators", [RegexValidator(NONCE_PATTERN)])
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_valid_nonce(value):
            raise serializers.ValidationError(f"Must be {NONCE_RULE}.")
        return value


#: Longest nonce of an app's own endpoints (content items, daily claims,
#: referrals): the ledger entry's nonce is derived from it with a prefix.
DOMAIN_NONCE_MAX_LENGTH = 96


def domain_nonce_field() -> NonceField:
    """The optional ``nonce`` of an app's own write endpoints."""
    return NonceField(required=False, max_length=DOMAIN_NONCE_MAX_LENGTH)


#: An integer as text: ASCII digits, an optional sign.
_DECIMAL = re.compile(r"[+-]?[0-9]+")


class StrictIntegerField(serializers.IntegerField):
    """An integer given as a JSON number or a decimal string (as HTML forms
    send it); no floats, no booleans, and none of the other texts Python's
    ``int()`` reads (``"5.0"``, ``"5_0"``, digits of other scripts)."""

    def to_internal_value(self, data):
        if isinstance(data, bool | float):
            self.fail("invalid")
        if isinstance(data, str) and not _DECIMAL.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


class _BlankJSON(str):
    # DRF's HTML forms show a JSON field's value as JSON text unless the value
    # says it already is the text (``is_json_string``): a blank box, not "null".
    is_json_string = True


class MetadataField(serializers.JSONField):
    """A small JSON object; optional, and left blank in HTML forms."""

    def __init__(self, **kwargs):
        kwargs.setdefault("initial", _BlankJSON(""))
        super().__init__(**kwargs)

    def get_value(self, dictionary):
        # A blank box of an HTML form means "no metadata", not invalid JSON.
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return empty
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = metadata_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class OperationField(serializers.ChoiceField):
    """An operation, offered as a choice of the app's operations (the schema's
    enum, the browsable API's select list). Any string reaches the service,
    which answers an operation the app does not accept with the ``allowed`` list."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("choices", [])
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Not a valid string.", code="invalid")
        if len(data) > OPERATION_MAX_LENGTH:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {OPERATION_MAX_LENGTH} characters.",
                code="max_length",
            )
        return data


def amount_within_cap(value: int) -> int:
    """``value`` if within LEDGER_MAX_ENTRY_AMOUNT. The service says the same of
    the same bound; checked here too so that no amount reaches it that a 64-bit
    column could not hold."""
    cap = ledger_settings.MAX_ENTRY_AMOUNT
    if abs(value) > cap:
        raise serializers.ValidationError(f"amount must be at most {cap} in absolute value.")
    return value


class EntryPostSerializer(serializers.Serializer):
    """One post; the same shape is one item of a batch."""

    owner_id = OwnerIdField()
    operation = OperationField()
    nonce = NonceField()
    amount = StrictIntegerField(
        required=False,
        help_text="Optional. Omitted: the configured amount. Owners may only give the "
        "configured amount; managers any non-zero amount of the operation's sign, at most "
        "LEDGER_MAX_ENTRY_AMOUNT in absolute value.",
    )
    metadata = MetadataField(required=False, allow_null=True, help_text="A small JSON object.")
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Optional, managers only, credits only: an ISO 8601 instant, in the future "
        "and at most 10 years ahead, when the credit's unspent rest expires. Omitted: the "
        "operation's expires_after, if it has one.",
    )

    def validate_amount(self, value: int) -> int:
        return amount_within_cap(value)


@functools.cache
def with_operations(
    base: type[serializers.Serializer], label: str, operations: tuple[str, ...]
) -> type[serializers.Serializer]:
    """``base`` (a post's or a hold's body) offering ``operations`` as its
    ``operation`` choices: one class per app, so the schema has one enum per app."""
    name = "".join(part.capitalize() for part in label.replace("-", "_").split("_"))
    return type(
        f"{name}{base.__name__}", (base,), {"operation": OperationField(choices=list(operations))}
    )


class ConsumedSerializer(serializers.Serializer):
    entry = serializers.IntegerField(help_text="the lot's credit entry")
    amount = serializers.IntegerField()


#: DRF's own rendering of an instant (``DATETIME_FORMAT``, current time zone).
_INSTANT = serializers.DateTimeField()


class PlainRepresentation(serializers.Serializer):
    """A read-only serializer whose ``to_representation`` (DRF's documented
    hook) builds the output directly with ``plain()``, instead of DRF copying
    and walking every declared field for every instance: about a fifth of a
    post's and of a balance read's CPU (docs/performance.md). The declared
    fields remain the schema; a test holds ``plain()`` equal to DRF's own
    field-by-field output, which ``LEDGER_PLAIN_REPRESENTATION = False``
    switches back to (the A/B)."""

    @staticmethod
    def plain(instance: Any) -> dict[str, Any]:
        raise NotImplementedError

    def to_representation(self, instance: Any) -> dict[str, Any]:
        if not ledger_settings.PLAIN_REPRESENTATION:
            return super().to_representation(instance)
        return self.plain(instance)


def entry_representation(entry: Any) -> dict[str, Any]:
    """An entry as ``EntrySerializer`` declares it."""
    data = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    data["created_at"] = _INSTANT.to_representation(entry.created_at)
    data["expires_at"] = _INSTANT.to_representation(entry.expires_at)
    if entry.consumed is not None:
        data["consumed"] = [
            {"entry": part["entry"], "amount": part["amount"]} for part in entry.consumed
        ]
    data["reversed_by"] = getattr(entry, "reversed_by", None)
    return data


class EntrySerializer(PlainRepresentation):
    """An entry as the API shows it: the fields of ``ENTRY_FIELDS``, in order,
    and ``reversed_by`` (annotated by ``entry_list``; None where not known).
    Declared, not a ``ModelSerializer``, which would rebuild them from the
    model for every response (see docs/performance.md)."""

    plain = staticmethod(entry_representation)

    id = serializers.IntegerField(read_only=True)
    owner_id = serializers.CharField(read_only=True)
    app = serializers.CharField(read_only=True)
    operation = serializers.CharField(read_only=True)
    amount = serializers.IntegerField(read_only=True)
    balance_after = serializers.IntegerField(read_only=True)
    nonce = serializers.CharField(read_only=True)
    metadata = serializers.JSONField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    reverses = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="for a REVERSAL: the id of the entry it undoes"
    )
    hold = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="for a capture: the id of the captured hold"
    )
    expires_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="for a credit that expires (a lot): when"
    )
    consumed = ConsumedSerializer(
        many=True, read_only=True, allow_null=True,
        help_text="for a debit: the lots it took credits from, in order (the rest came from "
        "credits that do not expire)",
    )  # fmt: skip
    seq = serializers.IntegerField(
        read_only=True, help_text="the owner's entry number (1 for the first)"
    )
    prev_hash = serializers.CharField(
        read_only=True, allow_null=True, help_text="the hash of the owner's previous entry"
    )
    hash = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="SHA-256 of prev_hash and this entry's canonical bytes (docs/hash-chain.md)",
    )  # fmt: skip
    reversed_by = serializers.IntegerField(
        read_only=True, allow_null=True, default=None,
        help_text="the id of the REVERSAL entry that undid this one, if any",
    )  # fmt: skip


class ReverseSerializer(serializers.Serializer):
    nonce = NonceField()
    reason = StrictCharField(max_length=500, help_text="why; stored in the reversal's metadata")


class DryRunEntrySerializer(EntrySerializer):
    id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="null: not stored (a replay's has its id)"
    )


class DryRunSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    entry = DryRunEntrySerializer(help_text="the entry as the post would store it")


class EntryPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = EntrySerializer(many=True)


class ExpiringSerializer(serializers.Serializer):
    amount = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


def balance_representation(view: Any) -> dict[str, Any]:
    """A balance (``BalanceView``) as ``BalanceSerializer`` declares it."""
    return {
        "owner_id": view.owner_id,
        "balance": view.balance,
        "held": view.held,
        "available": view.available,
        "expiring": [
            {"amount": lot.amount, "expires_at": _INSTANT.to_representation(lot.expires_at)}
            for lot in view.expiring
        ],
        "seq": view.seq,
        "head_hash": view.head_hash,
        "version": view.version,
        "updated_at": _INSTANT.to_representation(view.updated_at),
    }


class BalanceSerializer(PlainRepresentation):
    """An owner's balance as the API shows it."""

    plain = staticmethod(balance_representation)

    owner_id = serializers.CharField()
    balance = serializers.IntegerField(help_text="the sum of the owner's entries")
    held = serializers.IntegerField(help_text="credits reserved by pending, unexpired holds")
    available = serializers.IntegerField(help_text="balance - held: what debits may spend")
    expiring = ExpiringSerializer(
        many=True, help_text="up to the 5 soonest-expiring lots' unspent credits"
    )
    seq = serializers.IntegerField(help_text="the newest entry's seq (= version)")
    head_hash = serializers.CharField(help_text="the newest entry's hash (64 zeros: none)")
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField(allow_null=True)


class BalanceAtSerializer(serializers.Serializer):
    owner_id = serializers.CharField()
    at = serializers.DateTimeField()
    balance = serializers.IntegerField()
    version = serializers.IntegerField(help_text="the owner's entries up to that instant")


MAX_BALANCES = 1000


class BalancesQuerySerializer(serializers.Serializer):
    owner_ids = serializers.ListField(
        child=OwnerIdField(),
        min_length=1,
        max_length=MAX_BALANCES,
        help_text=f"1-{MAX_BALANCES} owner ids; each is answered once, in the order given",
    )

    def validate_owner_ids(self, value):
        return list(dict.fromkeys(value))  # the first of repeated ids


class BalancesSerializer(serializers.Serializer):
    balances = BalanceSerializer(many=True, help_text="one per owner id, in the order asked")


class BalanceQuerySerializer(serializers.Serializer):
    at = serializers.DateTimeField(
        required=False, help_text="ISO 8601 instant, not in the future: the balance as of then"
    )

    def validate_at(self, value):
        if value > timezone.now():
            raise serializers.ValidationError("at must not be in the future.")
        return value


class AppLabelField(serializers.CharField):
    """A registered app's label (a filter on any other could only match nothing,
    so a typo is a 400 listing the known ones, not an empty page)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", APP_LABEL_MAX_LENGTH)
        kwargs.setdefault("help_text", "a registered app's label")
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if registry.get_app(value) is None:
            raise serializers.ValidationError(
                f"Unknown app {value!r} (known apps: {registry.known_labels()})."
            )
        return value


class EntryFilterSerializer(serializers.Serializer):
    operation = serializers.CharField(
        required=False, max_length=OPERATION_MAX_LENGTH,
        help_text="an operation of any registered app or of the ledger",
    )  # fmt: skip
    app = AppLabelField(required=False)
    nonce = NonceField(
        required=False,
        help_text="the entry posted with this nonce, if any (did a post land?): "
        "an empty page if none",
    )
    since = serializers.DateTimeField(required=False, help_text="inclusive, ISO 8601")
    until = serializers.DateTimeField(required=False, help_text="exclusive, ISO 8601")

    def validate_operation(self, value):
        known = all_operation_values()
        if value not in known:
            raise serializers.ValidationError(
                f"Unknown operation {value!r} (known operations: {', '.join(sorted(known))})."
            )
        return value

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since > until:
            raise serializers.ValidationError({"until": "must not be before since."})
        return attrs


MAX_BATCH_ENTRIES = 1000


class BatchPostSerializer(serializers.Serializer):
    entries = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=MAX_BATCH_ENTRIES,
        help_text=f"1-{MAX_BATCH_ENTRIES} post bodies, as for a single post",
    )
    atomic = serializers.BooleanField(
        default=True,
        help_text="true: all entries commit or none; false: each entry stands alone",
    )


class BatchItemSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="201 created, 200 replay, or the error status")
    entry = EntrySerializer(required=False)
    error = serializers.DictField(required=False, help_text="the error body, for a refused entry")


class BatchResultSerializer(serializers.Serializer):
    atomic = serializers.BooleanField()
    results = BatchItemSerializer(many=True)


class HoldPostSerializer(serializers.Serializer):
    """A hold: a debit operation's credits reserved until captured, voided or expired."""

    owner_id = OwnerIdField()
    operation = OperationField(help_text="a debit operation of this app without a limit")
    nonce = NonceField(help_text="Idempotency key (holds have their own): " + NONCE_RULE)
    amount = StrictIntegerField(required=False, help_text="Optional, negative; rules as for posts.")
    expires_in = StrictIntegerField(
        required=False, min_value=1, max_value=7 * 24 * 3600,
        help_text="seconds until the hold expires, 1-604800 (default 900)",
    )  # fmt: skip

    def validate_amount(self, value: int) -> int:
        return amount_within_cap(value)


class HoldSerializer(serializers.Serializer):
    """A hold as the API shows it; ``status`` as of now (a pending hold past
    ``expires_at`` shows ``expired``)."""

    id = serializers.IntegerField(read_only=True)
    owner_id = serializers.CharField(read_only=True)
    app = serializers.CharField(read_only=True)
    operation = serializers.CharField(read_only=True)
    amount = serializers.IntegerField(read_only=True)
    status = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField(read_only=True)
    nonce = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    resolved_at = serializers.DateTimeField(read_only=True, allow_null=True)
    entry = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="the capturing entry's id, once captured"
    )

    @extend_schema_field(serializers.ChoiceField(choices=HoldStatus.values))
    def get_status(self, hold: Any) -> str:
        return getattr(hold, "current_status", None) or hold.status


class DryRunHoldSerializer(HoldSerializer):
    id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="null: not stored (a replay's has its id)"
    )


class HoldDryRunSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    hold = DryRunHoldSerializer(help_text="the hold as it would be stored")


class HoldCaptureSerializer(serializers.Serializer):
    amount = StrictIntegerField(
        required=False,
        help_text="Optional, negative: how much of the hold to post (default all of it); "
        "the rest is released.",
    )


class HoldVoidSerializer(serializers.Serializer):
    reason = StrictCharField(
        required=False, max_length=500, help_text="Optional: why (in the decision log line)"
    )


class CaptureResultSerializer(serializers.Serializer):
    entry = EntrySerializer()
    hold = HoldSerializer()


class HoldFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(required=False, choices=HoldStatus.values)
    nonce = NonceField(required=False, help_text="the hold placed with this nonce, if any")


class HoldPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = HoldSerializer(many=True)
