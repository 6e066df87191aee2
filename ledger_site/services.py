"""The site's writes: registration, which opens the new owner's ledger (with
the rules a new username must meet, for the API and the admin alike), and the
end of a login session."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from ledger_core.actors import Actor
from ledger_core.api import list_route_segments
from ledger_core.selectors import ledger_exists
from ledger_core.services import entry_post

from .models import RevokedSession

SIGNUP_NONCE = "signup"
SITE_APP = "site"

USERNAME_RULE = "1-128 characters of A-Z a-z 0-9 _ . @ + -"
USERNAME_RE = re.compile(r"\A[A-Za-z0-9_.@+\-]{1,128}\Z")
# A user's own ledger URL (ledger/<username>/) must not be one of the ledger API's
# list routes, nor a dot segment, which browsers, curl and most HTTP clients remove
# from a URL before sending it (RFC 3986, 5.2.4).
RESERVED_USERNAMES = list_route_segments() | {".", ".."}


def username_problem(username: str) -> tuple[str, str] | None:
    """Why ``username`` cannot be a new user's, as ``(code, message)``, or None.
    A regular user's owner id is their username, so it must be a valid owner id,
    not a reserved one, not taken in any letter case, and not the name of an
    existing ledger (a deleted account's, or an owner id credited directly):
    its new user would own those credits."""
    if not USERNAME_RE.match(username):
        return "invalid", f"Use {USERNAME_RULE}."
    if username.lower() in RESERVED_USERNAMES:
        return "reserved", "This username is reserved."
    if get_user_model().objects.filter(username__iexact=username).exists():
        return "taken", "This username is taken."
    if ledger_exists(owner_id=username):
        return "taken", "This username is taken."
    return None


def user_register(*, username: str, password: str, email: str = "") -> Any:
    """Create a user and post their SIGNUP_CREDIT in one transaction."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(
            username=username, password=password, email=email or ""
        )
        entry_post(
            owner_id=username,
            operation="SIGNUP_CREDIT",
            nonce=SIGNUP_NONCE,
            app=SITE_APP,
            actor=Actor.system("system:register"),
        )
    return user


def user_password_change(*, user: Any, password: str) -> None:
    """Give ``user`` a new password (validated by the caller). Every token
    issued before stops refreshing and writing at once: tokens carry a hash
    of the password they were issued under (simplejwt's ``CHECK_REVOKE_TOKEN``)."""
    user.set_password(password)
    user.save(update_fields=["password"])


def session_kept_for() -> timedelta:
    """How long a logged-out session is remembered: until every token that
    carries it has expired. A refresh that raced the logout may have minted a
    refresh token just before it (refreshing a revoked session is refused
    after), so: one refresh token's lifetime, one access token's, the clock
    leeway, and an hour to spare."""
    leeway = jwt_settings.LEEWAY
    if not isinstance(leeway, timedelta):
        leeway = timedelta(seconds=leeway)
    return (
        jwt_settings.REFRESH_TOKEN_LIFETIME
        + jwt_settings.ACCESS_TOKEN_LIFETIME
        + leeway
        + timedelta(hours=1)
    )


def session_revoke(*, sid: str, user_id: Any) -> None:
    """Record that login session ``sid`` has logged out (its tokens no longer
    write or refresh), and forget the sessions whose tokens have all expired."""
    RevokedSession.objects.get_or_create(
        sid=sid, defaults={"user": get_user_model().objects.filter(pk=user_id).first()}
    )
    revoked_sessions_prune()


def revoked_sessions_prune() -> int:
    """Forget the logged-out sessions whose tokens have all expired; how many."""
    cutoff = timezone.now() - session_kept_for()
    deleted, _ = RevokedSession.objects.filter(revoked_at__lt=cutoff).delete()
    return deleted
