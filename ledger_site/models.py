"""The site's own tables: logged-out sessions, verified email addresses."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RevokedSession(models.Model):
    """A login session ended by logout: access tokens carrying its ``sid`` no
    longer write (reads trust them until they expire, ``JWT_ACCESS_MINUTES``),
    and refresh tokens carrying it no longer refresh.

    A session is one login: its refresh token and every token refreshed or
    derived from it carry the same ``sid`` claim."""

    sid = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True)
    # Rows older than every token of the session are deleted at the next
    # logout (ledger_site.services.session_revoke).
    revoked_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "revoked session"

    def __str__(self) -> str:
        return f"session {self.sid} (revoked {self.revoked_at:%Y-%m-%d %H:%M})"


class VerifiedEmail(models.Model):
    """The address a user proved to receive mail at: a verification link sent
    there came back. Password reset links go to a user's address only while
    it is the one verified here, so a mistyped or someone else's address
    never receives the keys to the account."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True
    )
    email = models.EmailField()
    verified_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "verified email address"

    def __str__(self) -> str:
        return f"{self.email} (verified {self.verified_at:%Y-%m-%d %H:%M})"
