"""The rewards app's HTTP API: its ledger endpoints, the daily claim, referrals."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger_core.api import LedgerViewSet, domain_nonce_field, replay_response, request_actor
from ledger_core.api.schema import WRITE_ERRORS
from ledger_core.api.serializers import EntrySerializer, OwnerIdField
from ledger_core.services import daily_limit_frees_at

from .operations import RewardOperation
from .services import daily_claim, referral_create


class RewardsLedgerViewSet(LedgerViewSet):
    """Ledger endpoints accepting the rewards app's operations."""

    operations = RewardOperation


class _NonceMixin(serializers.Serializer):
    nonce = domain_nonce_field()


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
            {"entry": result.entry, "next_claim_at": daily_limit_frees_at(result.entry)}
        ).data
        return replay_response(body, replayed=result.replayed)


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
        return replay_response(ReferralResponseSerializer(result).data, replayed=result.replayed)
