"""JWT tokens that carry the ledger permissions, and authentication that trusts them for reads.

Design decision: an access token carries the user's username and ledger
permissions (``post_any``/``view_any``) as signed claims. Safe requests (GET,
HEAD, OPTIONS) are authenticated from those claims alone, with no database
query: that is what lets a cached balance read cost no SQL. Unsafe requests
(anything that moves credits) load the user from the database as usual, so a
deactivated user or a revoked manager permission stops writes at once; for
reads, such a change takes effect when the access token expires
(``JWT_ACCESS_MINUTES``, 15 by default). Claims are recomputed from the
database whenever tokens are issued or refreshed.

Writes read the user's state through ``ledger_site.authstate``: a Redis cache
that every change to the user, its groups or its permissions invalidates, so
that a write costs no user query and still sees a revocation at once.

A validated access token is kept in a small per-process cache keyed by the
whole encoded token (signature included), so a client that reuses its token
pays for the signature check and claim parsing once; expiry is checked again
on every use. Access tokens are never blacklisted (only refresh tokens are),
so nothing else about a validated token can change.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils.functional import cached_property
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import aware_utcnow

from ledger_core.actors import POST_ANY_PERMISSION, VIEW_ANY_PERMISSION

from .authstate import AuthState, auth_states
from .ratelimit import precount_for_user

CLAIM_PERMS = "perms"
CLAIM_USERNAME = "username"
CLAIM_STAFF = "staff"
PERMISSION_CLAIMS = {"post_any": POST_ANY_PERMISSION, "view_any": VIEW_ANY_PERMISSION}


def set_claims(token: Token, user: Any) -> Token:
    """Write the user's current username, staff flag and ledger permissions into ``token``."""
    token[CLAIM_USERNAME] = user.get_username()
    token[CLAIM_STAFF] = bool(user.is_staff)
    token[CLAIM_PERMS] = sorted(
        code for code, perm in PERMISSION_CLAIMS.items() if user.has_perm(perm)
    )
    return token


def token_pair_for(user: Any) -> RefreshToken:
    """A refresh token (and, through it, an access token) carrying the ledger claims."""
    return set_claims(RefreshToken.for_user(user), user)


class ClaimsUser:
    """A user rebuilt from a validated access token's claims, without a query."""

    is_active = True
    is_authenticated = True
    is_anonymous = False
    is_superuser = False

    def __init__(self, token: Token) -> None:
        self.token = token
        raw_id = token[api_settings.USER_ID_CLAIM]
        self.pk = self.id = int(raw_id) if str(raw_id).isdigit() else raw_id
        self.username = str(token[CLAIM_USERNAME])
        self.is_staff = bool(token.get(CLAIM_STAFF, False))

    @cached_property
    def _perms(self) -> frozenset[str]:
        codes = self.token.get(CLAIM_PERMS) or []
        return frozenset(PERMISSION_CLAIMS[c] for c in codes if c in PERMISSION_CLAIMS)

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return perm in self._perms

    def __str__(self) -> str:
        return self.username

    def __eq__(self, other: object) -> bool:
        return getattr(other, "pk", None) == self.pk and self.pk is not None

    def __hash__(self) -> int:
        return hash(self.pk)


@functools.lru_cache(maxsize=4096)
def _validated_access_token(raw_token: bytes) -> AccessToken:
    """An access token, signature and claims verified (a TokenError is not cached)."""
    return AccessToken(raw_token)


def _user_from_state(user_id: Any, state: AuthState) -> Any:
    """The user as a model instance built from cached state; the fields that
    were not cached are deferred (loaded from the database if ever read)."""
    User = _user_model()
    values = {
        User._meta.pk.attname: user_id,
        User.USERNAME_FIELD: state.username,
        "is_active": state.is_active,
        "is_staff": state.is_staff,
        "is_superuser": state.is_superuser,
    }
    names = [f.attname for f in User._meta.concrete_fields if f.attname in values]
    user = User.from_db("default", names, [values[name] for name in names])
    user._perm_cache = {f"ledger_core.{codename}" for codename in state.codenames}
    return user


def _state_of(user: Any) -> AuthState:
    codenames = getattr(user, "ledger_codenames", None)
    if codenames is None:
        codenames = [
            perm.split(".", 1)[1] for perm in PERMISSION_CLAIMS.values() if user.has_perm(perm)
        ]
    return AuthState(
        username=user.get_username(),
        is_active=bool(user.is_active),
        is_staff=bool(getattr(user, "is_staff", False)),
        is_superuser=bool(getattr(user, "is_superuser", False)),
        codenames=tuple(sorted(codenames)),
    )


@functools.cache
def _user_model() -> Any:
    # get_user_model() resolves the setting through the app registry on every
    # call; DRF builds a new authenticator (and so calls it) for every request.
    return get_user_model()


class LedgerJWTAuthentication(JWTAuthentication):
    """Bearer JWT authentication: claims only for safe methods, the database
    (through the auth-state cache) for writes."""

    def __init__(self) -> None:
        self.user_model = _user_model()

    def get_validated_token(self, raw_token: bytes) -> Token:
        if list(api_settings.AUTH_TOKEN_CLASSES) != [AccessToken]:
            return super().get_validated_token(raw_token)
        try:
            token = _validated_access_token(bytes(raw_token))
            token.check_exp(current_time=aware_utcnow())
        except TokenError:
            # Expired since it was cached, or invalid: the standard path gives
            # the standard error body.
            return super().get_validated_token(raw_token)
        return token

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated = self.get_validated_token(raw_token)
        if request.method in SAFE_METHODS and CLAIM_USERNAME in validated:
            if api_settings.USER_ID_CLAIM not in validated:
                raise InvalidToken("Token contained no recognizable user identification")
            return ClaimsUser(validated), validated
        user_id = validated.get(api_settings.USER_ID_CLAIM)
        prefetched = (
            precount_for_user(request, user_id, auth_states.fetch_keys(user_id))
            if user_id is not None
            else None
        )
        return self.get_user(validated, prefetched), validated

    def get_user(self, validated_token: Token, prefetched: dict | None = None) -> Any:
        """The active user of a write: from the auth-state cache, else the database.

        ``prefetched``: the auth-state entries, read in the rate limiter's round
        trip (``ledger_site.ratelimit.precount_for_user``)."""
        User = self.user_model
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        if User._meta.pk.attname != api_settings.USER_ID_FIELD:
            return self._user_from_database(validated_token, user_id)
        lookup = auth_states.lookup(user_id, prefetched)
        if lookup.state is not None:
            user = _user_from_state(user_id, lookup.state)
            if not api_settings.USER_AUTHENTICATION_RULE(user):
                raise AuthenticationFailed("User is inactive", code="user_inactive")
            return user
        user = self._user_from_database(validated_token, user_id)
        auth_states.fill(user_id, lookup.ticket, _state_of(user))
        return user

    def _user_from_database(self, validated_token: Token, user_id: Any) -> Any:
        """The user, active, with its ledger permissions, in one cheap query.

        Django would need three (the user, then user and group permissions on
        the first ``has_perm``), and an ORM ``Exists`` annotation costs ~3 ms
        of query planning; this statement plans in ~0.1 ms. The ledger
        permissions are pre-loaded into the permission cache ``ModelBackend``
        reads, so ``has_perm`` for them costs nothing; this request's user
        answers only for ledger permissions (superusers for all), which is all
        the API asks.
        """
        if connection.vendor != "postgresql":
            # The one-query form is PostgreSQL SQL; elsewhere (the embedded
            # SQLite default) the standard look-up and permission queries run.
            return super().get_user(validated_token)
        user = next(iter(self.user_model.objects.raw(_user_sql(), [user_id])), None)
        if user is None:
            raise AuthenticationFailed("User not found", code="user_not_found")
        if not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        user._perm_cache = {f"ledger_core.{codename}" for codename in user.ledger_codenames}
        return user


@functools.cache
def _user_sql() -> str:
    User = get_user_model()
    user_perms = User.user_permissions.through._meta
    user_groups = User.groups.through._meta
    group_perms = Group.permissions.through._meta
    codenames = ", ".join(f"'{perm.split('.', 1)[1]}'" for perm in PERMISSION_CLAIMS.values())
    return f"""
SELECT u.*, ARRAY(
    SELECT p.codename FROM {Permission._meta.db_table} p
    JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id
    WHERE ct.app_label = 'ledger_core' AND p.codename IN ({codenames})
      AND (p.id IN (SELECT up.permission_id FROM {user_perms.db_table} up
                    WHERE up.{user_perms.get_field("user").column} = u.{User._meta.pk.column})
        OR p.id IN (SELECT gp.permission_id FROM {user_groups.db_table} ug
                    JOIN {group_perms.db_table} gp ON gp.group_id = ug.group_id
                    WHERE ug.{user_groups.get_field("user").column} = u.{User._meta.pk.column}))
) AS ledger_codenames
FROM {User._meta.db_table} u WHERE u.{User._meta.get_field(api_settings.USER_ID_FIELD).column} = %s
"""  # noqa: S608 - identifiers come from model metadata, the id is a parameter


class LedgerTokenObtainPairSerializer(TokenObtainPairSerializer):
    @classmethod
    def get_token(cls, user: Any) -> Token:
        return set_claims(super().get_token(user), user)


class LedgerTokenRefreshSerializer(TokenRefreshSerializer):
    """Refresh with rotation; claims are re-read from the database, and a
    deleted or deactivated user gets a 401 (not a 500)."""

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
