"""JWT tokens that carry the ledger permissions, and authentication that trusts them for reads.

Design decision: an access token carries the user's username, staff flag and
ledger permissions (``post_any``/``view_any``) as signed claims. Safe requests
(GET, HEAD, OPTIONS) are authenticated from those claims alone, as simplejwt's
``JWTStatelessUserAuthentication`` does (the user is a ``LedgerTokenUser``,
``SIMPLE_JWT["TOKEN_USER_CLASS"]``): a balance read costs no user query.
Unsafe requests (anything that moves credits) load the user from the database
as simplejwt's ``JWTAuthentication`` does, so a deactivated or deleted user, a
changed password (``CHECK_REVOKE_TOKEN``) or a revoked manager permission stops
writes at once; for reads such a change takes effect when the access token
expires (``JWT_ACCESS_MINUTES``, 15 by default). Claims are recomputed from the
database whenever tokens are issued or refreshed.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.functional import cached_property
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import (
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)
from rest_framework_simplejwt.exceptions import (
    AuthenticationFailed,
    ExpiredTokenError,
    InvalidToken,
    TokenError,
)
from rest_framework_simplejwt.models import TokenUser
from rest_framework_simplejwt.serializers import (
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from ledger_core.actors import POST_ANY_PERMISSION, VIEW_ANY_PERMISSION

from .backends import one_statement_users, user_with_permissions
from .models import RevokedSession

CLAIM_PERMS = "perms"
CLAIM_SESSION = "sid"  # the login session: the first refresh token's jti
CLAIM_USERNAME = "username"  # the claim simplejwt's TokenUser reads
CLAIM_STAFF = "is_staff"  # likewise
PERMISSION_CLAIMS = {"post_any": POST_ANY_PERMISSION, "view_any": VIEW_ANY_PERMISSION}


def set_claims(token: Token, user: Any) -> Token:
    """Write the user's current username, staff flag and ledger permissions into
    ``token``, and name its session (kept through refreshes and rotations)."""
    if CLAIM_SESSION not in token:
        token[CLAIM_SESSION] = token[api_settings.JTI_CLAIM]
    token[CLAIM_USERNAME] = user.get_username()
    token[CLAIM_STAFF] = bool(user.is_staff)
    token[CLAIM_PERMS] = sorted(
        code for code, perm in PERMISSION_CLAIMS.items() if user.has_perm(perm)
    )
    return token


def token_pair_for(user: Any) -> RefreshToken:
    """A refresh token (and, through it, an access token) carrying the ledger claims."""
    return set_claims(RefreshToken.for_user(user), user)


class LedgerTokenUser(TokenUser):
    """simplejwt's stateless user, answering ``has_perm`` from the ledger claims."""

    @cached_property
    def id(self) -> Any:
        # simplejwt writes the user id claim as a string; the API shows the
        # model's integer primary key.
        raw = self.token[api_settings.USER_ID_CLAIM]
        return int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else raw

    def has_perm(self, perm: str, obj: object = None) -> bool:
        codes = self.token.get(CLAIM_PERMS) or []
        return any(PERMISSION_CLAIMS.get(code) == perm for code in codes)

    def __str__(self) -> str:
        return self.get_username()


class TokenExpired(AuthenticationFailed):
    """The access token has expired (its signature is good): refresh it."""

    default_code = "token_expired"
    default_detail = "The access token has expired; get a new one from /api/auth/token/refresh/."


class LedgerJWTAuthentication(JWTAuthentication):
    """Bearer JWT authentication: the token's claims for safe methods, the
    database for writes."""

    def get_raw_token(self, header: bytes) -> bytes | None:
        """simplejwt's, with the scheme read without regard to case (RFC 9110):
        ``bearer <token>``, as a client builds it from the login's
        ``token_type: "bearer"``, is a bearer token too."""
        scheme, space, rest = header.strip().partition(b" ")
        for accepted in api_settings.AUTH_HEADER_TYPES:
            if scheme.lower() == accepted.encode().lower():
                header = accepted.encode() + space + rest
                break
        return super().get_raw_token(header)

    def get_validated_token(self, raw_token: bytes) -> Token:
        """simplejwt's validation; a token whose only fault is its age is
        ``token_expired`` (every other fault stays ``token_not_valid``)."""
        for token_class in api_settings.AUTH_TOKEN_CLASSES:
            try:
                return token_class(raw_token)
            except ExpiredTokenError:
                # Raised only once the signature has been verified.
                raise TokenExpired() from None
            except TokenError:
                continue
        return super().get_validated_token(raw_token)

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated = self.get_validated_token(raw_token)
        if request.method in SAFE_METHODS:
            return JWTStatelessUserAuthentication().get_user(validated), validated
        return self.get_user(validated), validated

    def get_user(self, validated_token: Token) -> Any:
        """simplejwt's checks (the user exists, is active, and, with
        ``CHECK_REVOKE_TOKEN``, has not changed their password since the token
        was issued), and that the token's session has not logged out, on the
        user and their permissions read in one statement (``ledger_site.backends``,
        when its backend answers ``has_perm``)."""
        session = validated_token.get(CLAIM_SESSION)
        if not one_statement_users():
            user = super().get_user(validated_token)
            if session and RevokedSession.objects.filter(sid=session).exists():
                raise AuthenticationFailed("This session has logged out.", code="session_revoked")
            return user
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        user = user_with_permissions(api_settings.USER_ID_FIELD, user_id, session=session)
        if user is None:
            raise AuthenticationFailed("User not found", code="user_not_found")
        if user.session_revoked:
            raise AuthenticationFailed("This session has logged out.", code="session_revoked")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        return user


class LedgerTokenObtainPairSerializer(TokenObtainPairSerializer):
    @classmethod
    def get_token(cls, user: Any) -> Token:
        return set_claims(super().get_token(user), user)


class LedgerTokenRefreshSerializer(TokenRefreshSerializer):
    """Refresh with rotation; claims are re-read from the database, and a
    deleted or deactivated user, a refresh token issued before the user's
    password changed, or one of a session that has logged out gets a 401
    (not a 500)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = (
            get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
            if user_id is not None
            else None
        )
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], "no_active_account"
            )
        if api_settings.CHECK_REVOKE_TOKEN and refresh.payload.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        session = refresh.payload.get(CLAIM_SESSION)
        if session and RevokedSession.objects.filter(sid=session).exists():
            # A refresh token minted while its session was logging out.
            raise AuthenticationFailed("This session has logged out.", code="session_revoked")
        set_claims(refresh, user)
        data = {"access": str(refresh.access_token)}
        if api_settings.ROTATE_REFRESH_TOKENS:
            if api_settings.BLACKLIST_AFTER_ROTATION:
                refresh.blacklist()
            refresh.set_jti()
            refresh.set_exp()
            refresh.set_iat()
            refresh.outstand()
            data["refresh"] = str(refresh)
        return data
