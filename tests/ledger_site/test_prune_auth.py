"""``manage.py prune_auth`` deletes the authentication rows that can no longer
change an answer (expired refresh tokens and their blacklist entries, expired
sessions, forgotten logouts) and nothing that still can."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from ledger_site.models import RevokedSession
from ledger_site.services import session_kept_for
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"


def login(client) -> dict:
    response = client.post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(client, token: str):
    return client.post(REFRESH, {"refresh": token}, format="json")


def jti(refresh: str) -> str:
    return RefreshToken(refresh, verify=False)["jti"]


def prune() -> str:
    out = io.StringIO()
    call_command("prune_auth", stdout=out)
    return out.getvalue()


def test_prune_deletes_what_can_no_longer_matter_and_keeps_the_rest(api_client, user):
    # A session that ended long ago: its first refresh token was rotated
    # (blacklisted), and both of its tokens have since expired.
    old = login(api_client)
    rotated = refresh(api_client, old["refresh"]).json()
    old_jtis = {jti(old["refresh"]), jti(rotated["refresh"])}
    OutstandingToken.objects.filter(jti__in=old_jtis).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    # A live session, with a blacklisted token of its own that has not expired.
    live = login(api_client)
    live_rotated = refresh(api_client, live["refresh"]).json()
    # Browser sessions: one expired, one not.
    for _ in range(2):
        browser = Client()
        browser.force_login(user)
    Session.objects.filter(pk=Session.objects.order_by("expire_date").first().pk).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    # Logouts: one older than any token of its session can be, one recent.
    RevokedSession.objects.create(sid="forgotten", user=user)
    RevokedSession.objects.create(sid="recent", user=user)
    RevokedSession.objects.filter(sid="forgotten").update(
        revoked_at=timezone.now() - session_kept_for() - timedelta(minutes=1)
    )
    before = (OutstandingToken.objects.count(), BlacklistedToken.objects.count())
    assert before == (4, 2)

    out = prune()

    assert "2 expired refresh tokens (1 of them blacklisted) and 1 forgotten logouts" in out
    assert set(OutstandingToken.objects.values_list("jti", flat=True)) == {
        jti(live["refresh"]),
        jti(live_rotated["refresh"]),
    }
    # The live session's blacklist entry stays, so its rotated token stays refused.
    assert BlacklistedToken.objects.get().token.jti == jti(live["refresh"])
    assert refresh(api_client, live["refresh"]).status_code == 401
    assert refresh(api_client, live_rotated["refresh"]).status_code == 200
    assert Session.objects.count() == 1
    assert list(RevokedSession.objects.values_list("sid", flat=True)) == ["recent"]
    # Nothing more to do: a second pass deletes nothing.
    assert "0 expired refresh tokens (0 of them blacklisted) and 0 forgotten logouts" in prune()
