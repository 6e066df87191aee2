"""The rewards app's HTTP API: its ledger endpoints, the daily claim, referrals."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger_core.api import LedgerViewSet, request_actor
from ledger_core.api.schema import WRITE_ERRORS
from ledger_core.api.serializers import EntrySerializer, OwnerIdField, StrictCharField
from ledger_core.services import next_utc_midnight
from ledger_core.validation import NONCE_RULE, is_valid_nonce

from .services import daily_claim, referral_create

NONCE_MAX = 96


class RewardsLedgerViewSet(LedgerViewSet):
    """Ledger endpoints accepting the rewards app's operations."""

    app_label = "rewards"


class _NonceMixin(serializers.Serializer):
    nonce = StrictCharField(
        required=False,
        max_length=NONCE_MAX,
        trim_whitespace=False,
        help_text=f"Idempotency key: 1-{NONCE_MAX} printable ASCII characters, no whitespace",
    )

    def validate_nonce(self, value: str) -> str:
        if not is_valid_nonce(value):
            raise serializers.ValidationError(f"Must be {NONCE_RULE}.")
        return value


class DailyClaimSerializer(_NonceMixin):
    pass


class DailyClaimResponseSerializer(serializers.Serializer):
    entry = EntrySerializer()
    next_claim_at = serializers.DateTimeField()


class ReferralSerializer(_NonceMixin):
    referrer = OwnerIdField(help_text="username of the user who referred")
    referred = OwnerIdField(help_text="username of the user who was referred")


class ReferralResponseSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="referral.pk")
    referrer = serializers.CharField(source="referral.referrer.username")
    referred = serializers.CharField(source="referral.referred.username")
    created_at = serializers.DateTimeField(source="referral.created_at")
    entry = EntrySerializer()


def _replayable(body: dict, replayed: bool) -> Response:
    if replayed:
        return Response(body, status=status.HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
    return Response(body, status=status.HTTP_201_CREATED)


class DailyClaimView(APIView):
    """Claim today's DAILY_REWARD (+1) for the caller, once per UTC day."""

    @extend_schema(
        summary="Claim today's DAILY_REWARD (+1); once per UTC day",
        request=DailyClaimSerializer,
        responses={
            201: DailyClaimResponseSerializer,
            200: OpenApiResponse(DailyClaimResponseSerializer, description="replay (same nonce)"),
            **WRITE_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = DailyClaimSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = daily_claim(
            user=request.user,
            actor=request_actor(request),
            nonce=serializer.validated_data.get("nonce"),
        )
        body = DailyClaimResponseSerializer(
            {"entry": result.entry, "next_claim_at": next_utc_midnight(timezone.now())}
        ).data
        return _replayable(body, result.replayed)


class ReferralView(APIView):
    """Managers only: pay REFERRAL_BONUS (+5) to ``referrer``, once per ``referred``."""

    @extend_schema(
        summary="Managers: pay REFERRAL_BONUS (+5) to the referrer, once per referred user",
        request=ReferralSerializer,
        responses={
            201: ReferralResponseSerializer,
            200: OpenApiResponse(ReferralResponseSerializer, description="replay (same nonce)"),
            **WRITE_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ReferralSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = referral_create(
            referrer=data["referrer"],
            referred=data["referred"],
            nonce=data.get("nonce"),
            actor=request_actor(request),
        )
        return _replayable(ReferralResponseSerializer(result).data, result.replayed)
