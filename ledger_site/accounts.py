"""Accounts: registration (with the signup credit), JWT tokens, logout,
password change and reset by mail, me.

A regular user's ledger owner id is their username, so usernames are limited
to characters an owner id may hold and are unique case-insensitively.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation, update_session_auth_hash
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from ledger_core.actors import POST_ANY_PERMISSION, VIEW_ANY_PERMISSION
from ledger_core.api.schema import BAD_REQUEST, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE, error
from ledger_core.selectors import balance_get

from .jwt import (
    CLAIM_SESSION,
    LedgerTokenObtainPairSerializer,
    LedgerTokenRefreshSerializer,
    token_pair_for,
)
from .services import (
    USERNAME_RULE,
    email_is_verified,
    email_verification_send,
    email_verify,
    password_reset_request,
    password_reset_user,
    session_revoke,
    user_email_change,
    user_password_change,
    user_register,
    username_problem,
)


def password_field() -> serializers.CharField:
    """A password as it is typed: write-only, not trimmed."""
    return serializers.CharField(
        max_length=128, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


def password_problems(password: str, user: Any) -> list[str]:
    """What Django's password validators hold against ``password`` for ``user``."""
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as exc:
        return list(exc.messages)
    return []


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(
        max_length=128,
        trim_whitespace=False,
        help_text=f"{USERNAME_RULE} (your ledger owner id)",
    )
    password = password_field()
    email = serializers.EmailField(required=False, allow_blank=True)

    def validate_username(self, value: str) -> str:
        problem = username_problem(value)
        if problem is not None:
            code, message = problem
            raise serializers.ValidationError(message, code=code)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = get_user_model()(username=attrs["username"], email=attrs.get("email", ""))
        if problems := password_problems(attrs["password"], user):
            raise serializers.ValidationError({"password": problems})
        return attrs


class RegisteredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    owner_id = serializers.CharField()
    balance = serializers.IntegerField(help_text="after the signup credit")


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    access_token = serializers.CharField(help_text="the same as access")
    token_type = serializers.CharField(help_text='always "bearer"')
    expires_in = serializers.IntegerField(help_text="access token lifetime in seconds")


class RefreshRequestSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class RefreshedSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField(help_text="a new refresh token; the old one is blacklisted")


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    owner_id = serializers.CharField()
    email = serializers.CharField(help_text="the account's address; empty: none")
    email_verified = serializers.BooleanField(
        help_text="the address came back verified: password reset links go to it"
    )
    is_staff = serializers.BooleanField()
    balance = serializers.IntegerField()
    permissions = serializers.ListField(child=serializers.CharField())


class RegisterView(APIView):
    """Create an account; the new owner receives the signup credit."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Register; the new owner gets the signup credit",
        request=RegisterSerializer,
        responses={
            201: RegisteredSerializer,
            400: BAD_REQUEST,
            429: RATE_LIMITED,
            503: UNAVAILABLE,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            user = user_register(
                username=data["username"], password=data["password"], email=data.get("email", "")
            )
        except IntegrityError:
            raise serializers.ValidationError({"username": ["This username is taken."]}) from None
        email_verification_send(user=user, verify_url=api_url(request, "auth:email-verify"))
        balance = balance_get(owner_id=user.get_username())
        return Response(
            {
                "id": user.pk,
                "username": user.get_username(),
                "owner_id": user.get_username(),
                "balance": balance.balance,
            },
            status=status.HTTP_201_CREATED,
        )


class TokenView(TokenObtainPairView):
    """Username + password (JSON or form) to an access/refresh token pair."""

    authentication_classes: list = []
    serializer_class = LedgerTokenObtainPairSerializer
    ratelimit_group = "auth"

    @extend_schema(
        summary="Log in: username and password (JSON or form) to tokens",
        request=TokenRequestSerializer,
        responses={
            200: TokenPairSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            429: RATE_LIMITED,
        },
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().post(request, *args, **kwargs)
        if response.status_code == status.HTTP_200_OK:
            response.data = token_pair_body(
                access=response.data["access"], refresh=response.data["refresh"]
            )
        return response


def token_pair_body(*, access: str, refresh: str) -> dict[str, Any]:
    """A login's answer: the pair, and the access token as OAuth 2 names it."""
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    return {
        "access": access,
        "refresh": refresh,
        "access_token": access,
        "token_type": "bearer",
        "expires_in": int(lifetime.total_seconds()),
    }


class RefreshView(TokenRefreshView):
    """A refresh token to a new access token and a rotated refresh token."""

    authentication_classes: list = []
    serializer_class = LedgerTokenRefreshSerializer
    ratelimit_group = "auth"

    @extend_schema(
        summary="Rotate: a refresh token to a new access and refresh token",
        request=RefreshRequestSerializer,
        responses={
            200: RefreshedSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            429: RATE_LIMITED,
        },
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    """End a login session: its refresh token can no longer be used or
    refreshed, and its access tokens no longer write (reads accept them until
    they expire)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    ratelimit_group = "auth"

    def get_authenticate_header(self, request: Request) -> str:
        # No authenticator runs here, but a bad refresh token is still a 401.
        return 'Bearer realm="api"'

    @extend_schema(
        summary="Log out: blacklist a refresh token",
        request=LogoutSerializer,
        responses={
            205: OpenApiResponse(description="blacklisted; no body"),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            429: RATE_LIMITED,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(serializer.validated_data["refresh"])
            refresh.blacklist()
        except TokenError as exc:
            raise AuthenticationFailed(str(exc), code="token_not_valid") from None
        # The session's access tokens stop writing at once, too.
        sid = refresh.get(CLAIM_SESSION) or refresh[jwt_settings.JTI_CLAIM]
        user_id = refresh.get(jwt_settings.USER_ID_CLAIM)
        session_revoke(sid=sid, user_id=user_id)
        return Response(status=status.HTTP_205_RESET_CONTENT)


def own_password(user: Any, value: str) -> str:
    """``value`` if it is ``user``'s password, else the field's 400: what a
    change to the account asks so that an access token alone cannot make it."""
    if not user.check_password(value):
        raise serializers.ValidationError("This is not your password.", code="wrong")
    return value


def api_url(request: Request, name: str) -> str:
    """The absolute URL of the API endpoint ``name``, as a mail names it."""
    return request.build_absolute_uri(reverse(name))


class PasswordChangeSerializer(serializers.Serializer):
    old_password = password_field()
    new_password = password_field()

    def validate_old_password(self, value: str) -> str:
        return own_password(self.context["user"], value)

    def validate_new_password(self, value: str) -> str:
        if problems := password_problems(value, self.context["user"]):
            raise serializers.ValidationError(problems)
        return value


class PasswordChangeView(APIView):
    """Change your password. Every token issued before stops refreshing and
    writing at once (reads accept an access token until it expires); the
    answer carries a new token pair, as a login does."""

    permission_classes = [IsAuthenticated]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Change your password; answers a new token pair",
        request=PasswordChangeSerializer,
        responses={
            200: TokenPairSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            429: RATE_LIMITED,
        },
    )
    def post(self, request: Request) -> Response:
        # A write: the authenticator loaded the user from the database.
        user = request.user
        serializer = PasswordChangeSerializer(data=request.data, context={"user": user})
        serializer.is_valid(raise_exception=True)
        user_password_change(user=user, password=serializer.validated_data["new_password"])
        # A browser session that made the change stays logged in (Django
        # would end it otherwise); a bearer token's request has no session to
        # keep, and must not be given one.
        if isinstance(request.successful_authenticator, SessionAuthentication):
            update_session_auth_hash(request, user)
        pair = token_pair_for(user)
        return Response(token_pair_body(access=str(pair.access_token), refresh=str(pair)))


class EmailChangeSerializer(serializers.Serializer):
    password = password_field()
    email = serializers.EmailField(allow_blank=True, help_text="empty: no address")

    def validate_password(self, value: str) -> str:
        return own_password(self.context["user"], value)


class EmailSerializer(serializers.Serializer):
    email = serializers.CharField()
    email_verified = serializers.BooleanField()
    verification_sent = serializers.BooleanField(
        help_text="a verification link was mailed to the address"
    )


class EmailChangeView(APIView):
    """Set or change your email address. It takes your password, so a stolen
    access token alone cannot redirect reset links; links sent before stop
    working, and the address gets a verification link (setting the same
    address again sends a new one): reset links go to it once verified."""

    permission_classes = [IsAuthenticated]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Change your email address (for password reset links)",
        request=EmailChangeSerializer,
        responses={200: EmailSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, 429: RATE_LIMITED},
    )
    def post(self, request: Request) -> Response:
        # A write: the authenticator loaded the user from the database.
        serializer = EmailChangeSerializer(data=request.data, context={"user": request.user})
        serializer.is_valid(raise_exception=True)
        user = request.user
        user_email_change(user=user, email=serializer.validated_data["email"])
        sent = email_verification_send(user=user, verify_url=api_url(request, "auth:email-verify"))
        body = {"email": user.email, "email_verified": email_is_verified(user)}
        return Response({**body, "verification_sent": sent})


class EmailVerifySerializer(serializers.Serializer):
    token = serializers.CharField(max_length=500, help_text="from the verification mail")


class EmailVerifiedSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField()
    email_verified = serializers.BooleanField()


class EmailVerifyView(APIView):
    """Confirm an address with the token its verification mail carried."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Confirm your email address with the mailed token",
        request=EmailVerifySerializer,
        responses={200: EmailVerifiedSerializer, 400: BAD_REQUEST, 429: RATE_LIMITED},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = EmailVerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = email_verify(token=serializer.validated_data["token"])
        if user is None:
            raise serializers.ValidationError({"token": [DEAD_VERIFY_LINK]}, code="invalid_link")
        body = {"username": user.get_username(), "email": user.email, "email_verified": True}
        return Response(body)


DEAD_VERIFY_LINK = (
    "This verification link is not valid: it expired, or the account's address changed since. "
    "Set the address again for a new one."
)


class PasswordResetSerializer(serializers.Serializer):
    email = serializers.EmailField(help_text="the email address of your account")


class ResetRequestedSerializer(serializers.Serializer):
    detail = serializers.CharField()


RESET_REQUESTED = (
    "If an active account has this email address, a password reset link is on its way to it."
)


class ResetByMailOff(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "not_configured"
    default_detail = (
        "Password reset by mail is not configured on this site (EMAIL_URL); "
        "an administrator can set a new password."
    )


class PasswordResetView(APIView):
    """Ask for a password reset link by mail. The answer is the same whether
    or not an account has the address, so it tells nobody who has one."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Forgot your password: a reset link by mail",
        request=PasswordResetSerializer,
        responses={
            202: ResetRequestedSerializer,
            400: BAD_REQUEST,
            429: RATE_LIMITED,
            503: error("mail is not configured on this site (not_configured)"),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        if not settings.EMAIL_ENABLED:
            raise ResetByMailOff()
        serializer = PasswordResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        password_reset_request(
            email=serializer.validated_data["email"],
            confirm_url=api_url(request, "auth:password-reset-confirm"),
        )
        return Response({"detail": RESET_REQUESTED}, status=status.HTTP_202_ACCEPTED)


DEAD_LINK = (
    "This reset link is not valid: it expired, was used, or was replaced by a newer password. "
    "Ask for a new one."
)


class PasswordResetConfirmSerializer(serializers.Serializer):
    uid = serializers.CharField(max_length=64, help_text="from the reset link")
    token = serializers.CharField(max_length=64, help_text="from the reset link")
    new_password = password_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = password_reset_user(uid=attrs["uid"], token=attrs["token"])
        if user is None:
            raise serializers.ValidationError({"token": DEAD_LINK}, code="invalid_link")
        if problems := password_problems(attrs["new_password"], user):
            raise serializers.ValidationError({"new_password": problems})
        return {**attrs, "user": user}


class PasswordResetConfirmView(APIView):
    """Set a new password with a reset link's ``uid`` and ``token``. The link
    then stops working, and every token issued before stops refreshing and
    writing, as after a password change; log in with the new password."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    ratelimit_group = "auth"

    @extend_schema(
        summary="Set a new password with a reset link",
        request=PasswordResetConfirmSerializer,
        responses={
            204: OpenApiResponse(description="changed; log in with the new password"),
            400: BAD_REQUEST,
            429: RATE_LIMITED,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user_password_change(user=data["user"], password=data["new_password"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    """The authenticated user, their owner id, balance and ledger permissions,
    as the database has them now (a deleted or inactive user gets a 401)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="The authenticated user",
        responses={200: MeSerializer, 401: UNAUTHORIZED, 429: RATE_LIMITED},
    )
    def get(self, request: Request) -> Response:
        # A read authenticates from the token's claims; this one answers from
        # the database, so a deleted or deactivated user learns it at once.
        user = get_user_model().objects.filter(pk=request.user.pk, is_active=True).first()
        if user is None:
            raise AuthenticationFailed("User not found or inactive.", code="user_inactive")
        ledger_perms = [
            perm for perm in (POST_ANY_PERMISSION, VIEW_ANY_PERMISSION) if user.has_perm(perm)
        ]
        owner_id = user.get_username()
        return Response(
            {
                "id": user.pk,
                "username": owner_id,
                "owner_id": owner_id,
                "email": user.email,
                "email_verified": email_is_verified(user),
                "is_staff": user.is_staff,
                "balance": balance_get(owner_id=owner_id).balance,
                "permissions": ledger_perms,
            }
        )
