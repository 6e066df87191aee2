"""OpenAPI building blocks for ledger endpoints: the error body and the
responses each kind of endpoint can return, shared by every consumer app."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The one error body of the API."""

    code = serializers.CharField(help_text="machine code, e.g. insufficient_balance")
    detail = serializers.CharField(help_text="human-readable explanation")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(
        required=False, help_text="field name -> list of messages (input validation only)"
    )
    field = serializers.CharField(required=False, help_text="the offending field")
    allowed = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="operations this endpoint accepts (unknown operation only)",
    )


class ConflictSerializer(ErrorSerializer):
    balance = serializers.IntegerField(required=False, help_text="insufficient_balance only")
    available = serializers.IntegerField(
        required=False, help_text="insufficient_balance only: balance - held"
    )
    status = serializers.CharField(
        required=False, help_text="hold_not_pending, hold_expired: the hold's status"
    )
    hold_id = serializers.IntegerField(required=False, help_text="nonce_conflict of a hold")
    reversal_id = serializers.IntegerField(required=False, help_text="already_reversed only")
    required = serializers.IntegerField(required=False, help_text="insufficient_balance only")
    next_claim_at = serializers.DateTimeField(
        required=False, help_text="limit_reached for daily operations: next UTC midnight"
    )
    entry_id = serializers.IntegerField(required=False, help_text="nonce_conflict only")


def error(description: str, serializer=ErrorSerializer, examples=None) -> OpenApiResponse:
    return OpenApiResponse(response=serializer, description=description, examples=examples or [])


BAD_REQUEST = error("invalid input", ValidationErrorSerializer)
UNAUTHORIZED = error(
    "missing, invalid or expired credentials (not_authenticated, authentication_failed)"
)
FORBIDDEN = error("not yours to read or move (forbidden)")
NOT_FOUND = error("no such resource (not_found)")
RATE_LIMITED = error("rate limit reached (rate_limited); see the Retry-After header")
UNAVAILABLE = error("the database is unreachable (unavailable); retry after Retry-After")

READ_ERRORS = {400: BAD_REQUEST, 401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED}

POST_CONFLICT = error(
    "insufficient_balance, limit_reached, nonce_conflict or nonce_in_flight (retryable)",
    ConflictSerializer,
    examples=[
        OpenApiExample(
            "insufficient balance",
            value={
                "code": "insufficient_balance",
                "detail": "Balance 2 does not cover 5.",
                "balance": 2,
                "required": 5,
            },
            status_codes=["409"],
            response_only=True,
        ),
        OpenApiExample(
            "daily limit",
            value={
                "code": "limit_reached",
                "detail": "DAILY_REWARD can be posted once per UTC day.",
                "next_claim_at": "2026-11-27T00:00:00Z",
            },
            status_codes=["409"],
            response_only=True,
        ),
    ],
)

WRITE_ERRORS = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    409: POST_CONFLICT,
    429: RATE_LIMITED,
    503: UNAVAILABLE,
}
