"""The site's writes: registration, which opens the new owner's ledger (with
the rules a new username must meet, for the API and the admin alike), the
end of a login session, and password changes and resets."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from prometheus_client import Counter
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from ledger_core.actors import Actor
from ledger_core.api import list_route_segments
from ledger_core.selectors import ledger_exists
from ledger_core.services import entry_post

from .models import RevokedSession, VerifiedEmail

logger = logging.getLogger("ledger_site.accounts")

MAIL_FAILURES = Counter(
    "ledger_mail_failures",
    "Mails (password reset links) the mail server did not take; the user was not told.",
)

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


def user_email_change(*, user: Any, email: str) -> None:
    """Give ``user`` a new email address (the caller checked their password).
    Reset links sent before stop working: Django's reset token covers the
    address."""
    user.email = email
    user.save(update_fields=["email"])
    logger.info("email changed", extra={"user_id": user.pk})


_VERIFY_SALT = "ledger_site.email-verification"


def _mail(user: Any, subject: str, body: str, what: str) -> bool:
    """Send ``body`` to ``user``'s address; False (logged and counted) if the
    mail server did not take it: callers answer the same either way."""
    try:
        send_mail(subject, body, None, [user.email])  # from DEFAULT_FROM_EMAIL
    except Exception:  # noqa: BLE001 - SMTP refusals, timeouts, DNS...
        MAIL_FAILURES.inc()
        logger.exception(f"{what} mail failed", extra={"user_id": user.pk})
        return False
    logger.info(f"{what} mailed", extra={"user_id": user.pk})
    return True


def _link(page: str, api_url: str, **values: str) -> str:
    """How a mail tells the user to use a token: the site's page for it, with
    the values filled in, or else the API call."""
    if page:
        for name, value in values.items():
            page = page.replace("{" + name + "}", value)
        return f"Open this link:\n\n{page}"
    body = ", ".join(f'"{name}": "{value}"' for name, value in values.items())
    return f"Post this to the site's API:\n\nPOST {api_url}\n{{{body}}}"


def email_verification_send(*, user: Any, verify_url: str) -> bool:
    """Mail ``user`` a link that proves they receive mail at their address
    (``EMAIL_VERIFY_TIMEOUT`` seconds); whether the mail server took it."""
    if not settings.EMAIL_ENABLED or not user.email:
        return False
    token = signing.dumps({"u": user.pk, "e": user.email.lower()}, salt=_VERIFY_SALT)
    days = max(1, settings.EMAIL_VERIFY_TIMEOUT // 86400)
    body = (
        f"Confirm that {user.email} is the address of the account {user.get_username()!r}. "
        f"{_link(settings.EMAIL_VERIFY_URL, verify_url, token=token)}\n\n"
        f"The link works for {days} day(s). Until the address is confirmed, password reset "
        "links are not sent to it. If you did not ask for this, ignore this mail.\n"
    )
    return _mail(user, f"Confirm the email address of {user.get_username()}", body, "verification")


def email_verify(*, token: str) -> Any | None:
    """The active user whose current address ``token`` (from a verification
    mail, not expired) proves; the address is then verified. None if the
    token is not one, expired, or names an address the user no longer has."""
    try:
        claim = signing.loads(token, salt=_VERIFY_SALT, max_age=settings.EMAIL_VERIFY_TIMEOUT)
        pk, email = int(claim["u"]), str(claim["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
    user = get_user_model().objects.filter(pk=pk, is_active=True).first()
    if user is None or not user.email or user.email.lower() != email:
        return None
    VerifiedEmail.objects.update_or_create(user=user, defaults={"email": user.email})
    logger.info("email verified", extra={"user_id": user.pk})
    return user


def email_is_verified(user: Any) -> bool:
    """Whether ``user``'s current address is the one they verified."""
    return (
        bool(user.email)
        and VerifiedEmail.objects.filter(user=user, email__iexact=user.email).exists()
    )


def password_reset_request(*, email: str, confirm_url: str) -> int:
    """Mail a password reset link to every active user whose verified address
    is ``email`` (any letter case) and who has a usable password; how many
    were mailed. The caller answers the same whatever this finds, so nobody
    learns which addresses have accounts; a mail that cannot be sent is
    logged, not raised, for the same reason. ``confirm_url`` is the API's
    confirm endpoint, named in the mail when the site has no reset page of
    its own (``PASSWORD_RESET_URL``)."""
    sent = 0
    users = get_user_model().objects.filter(
        email__iexact=email, is_active=True, verifiedemail__email__iexact=email
    )
    for user in users:
        if not user.has_usable_password():
            continue  # an account that logs in some other way
        uid = urlsafe_base64_encode(force_bytes(user.pk))
        token = default_token_generator.make_token(user)
        link = _link(settings.PASSWORD_RESET_URL, confirm_url, uid=uid, token=token)
        minutes = max(1, settings.PASSWORD_RESET_TIMEOUT // 60)
        body = (
            "Someone, hopefully you, asked to reset the password of the account "
            f'{user.get_username()!r}. To choose a new one (with "new_password" beside '
            f"the uid and token when you use the API): {link}\n\nThe link works once, for "
            f"{minutes} minutes. If you did not ask, ignore this mail: your password stays "
            "as it is.\n"
        )
        sent += _mail(user, f"Reset the password of {user.get_username()}", body, "password reset")
    return sent


def password_reset_user(*, uid: str, token: str) -> Any | None:
    """The active user a reset link (``uid``, ``token``) was made for, if the
    link still works: not expired (``PASSWORD_RESET_TIMEOUT``) and not used
    (a token is bound to the password it was made under). None otherwise."""
    try:
        pk = force_str(urlsafe_base64_decode(uid))
    except ValueError:  # not base64, or not text
        return None
    if not (pk.isascii() and pk.isdigit() and len(pk) <= 18):
        return None
    user = get_user_model().objects.filter(pk=int(pk), is_active=True).first()
    if user is None or not default_token_generator.check_token(user, token):
        return None
    return user


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
