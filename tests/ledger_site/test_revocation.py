"""Every change to a user, its groups or its permissions reaches the next write at once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from tests.conftest import bearer_client, fund
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CONTENT = "/api/content/ledger/"


def grant(client, nonce: str, owner: str = "bob"):
    return client.post(
        CONTENT,
        {"owner_id": owner, "operation": "CREDIT_ADD", "amount": 1, "nonce": nonce},
        format="json",
    )


def spend(client, nonce: str, owner: str = "alice"):
    return client.post(
        CONTENT, {"owner_id": owner, "operation": "CREDIT_SPEND", "nonce": nonce}, format="json"
    )


def test_deactivation_stops_the_next_write():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.is_active = False
    alice.save()
    response = spend(client, "n2")
    assert response.status_code == 401, response.content


def test_deleted_user_cannot_write():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.delete()
    assert spend(client, "n2").status_code == 401


def test_rename_reaches_the_next_write():
    # The ledger of a user is its username: a renamed user posts to its new name only.
    alice = UserFactory(username="alice")
    fund("alice", 5)
    fund("alicia", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.username = "alicia"
    alice.save()
    assert spend(client, "n2", owner="alice").status_code == 403
    assert spend(client, "n3", owner="alicia").status_code == 201


def test_group_permission_revoked_reaches_every_member():
    managers = Group.objects.create(name="managers")
    post_any = Permission.objects.get(codename="post_any_entry")
    managers.permissions.add(post_any)
    users = [UserFactory(username=f"m{i}") for i in range(2)]
    for user in users:
        user.groups.add(managers)
    clients = [bearer_client(user) for user in users]
    for i, client in enumerate(clients):
        assert grant(client, f"a{i}").status_code == 201
    managers.permissions.remove(post_any)  # changes no user row: a global invalidation
    for i, client in enumerate(clients):
        assert grant(client, f"b{i}").status_code == 403


def test_group_deleted_and_membership_removed_from_the_group_side():
    managers = Group.objects.create(name="managers")
    managers.permissions.add(Permission.objects.get(codename="post_any_entry"))
    boss = UserFactory(username="boss")
    boss.groups.add(managers)
    client = bearer_client(boss)
    assert grant(client, "n1").status_code == 201
    managers.user_set.remove(boss)  # reverse side of the membership
    assert grant(client, "n2").status_code == 403
    managers.user_set.add(boss)
    assert grant(client, "n3").status_code == 201
    managers.delete()
    assert grant(client, "n4").status_code == 403


def test_password_change_stops_writes_with_older_access_tokens():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.set_password("a-new-passphrase-41")
    alice.save()
    response = spend(client, "n2")
    assert response.status_code == 401, response.content
    assert (
        bearer_client(alice)
        .post(
            CONTENT,
            {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "n3"},
            format="json",
        )
        .status_code
        == 201
    )


def test_one_statement_user_answers_like_django(django_assert_num_queries):
    """The user a write loads with its permissions holds what Django's own
    look-ups say: own and group permissions, and nothing else."""
    from django.contrib.auth import get_user_model

    from ledger_site.backends import user_with_permissions

    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_any_ledger"))
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    boss.groups.add(auditors)
    with django_assert_num_queries(1):
        loaded = user_with_permissions("id", boss.pk)
        assert loaded.has_perm("ledger_core.post_any_entry")
        assert loaded.has_perm("ledger_core.view_any_ledger")
        assert not loaded.has_perm("ledger_core.delete_ledgerentry")
    fresh = get_user_model().objects.get(pk=boss.pk)
    assert fresh.get_all_permissions() == loaded.get_all_permissions()
    assert user_with_permissions("id", 10**9) is None


def test_password_change_stops_refreshing_older_refresh_tokens(api_client):
    from ledger_site.jwt import token_pair_for

    alice = UserFactory(username="alice")
    refresh = str(token_pair_for(alice))
    response = api_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code == 200, response.content
    rotated = response.json()["refresh"]
    alice.set_password("a-new-passphrase-41")
    alice.save()
    response = api_client.post("/api/auth/token/refresh/", {"refresh": rotated}, format="json")
    assert response.status_code == 401, response.content


@pytest.mark.parametrize("change", ["delete", "deactivate"])
def test_me_answers_401_for_a_deleted_or_inactive_user(change):
    alice = UserFactory(username="alice")
    client = bearer_client(alice)
    assert client.get("/api/auth/me/").status_code == 200
    if change == "delete":
        alice.delete()
    else:
        alice.is_active = False
        alice.save()
    assert client.get("/api/auth/me/").status_code == 401


def test_logout_stops_the_sessions_writes_at_once(api_client):
    alice = UserFactory(username="alice")
    fund("alice", 5)
    from tests.factories import PASSWORD

    tokens = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    ).json()
    other = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    ).json()  # a second login (another device)
    session = APIClient()
    session.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert spend(session, "n1").status_code == 201
    response = api_client.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 205
    response = spend(session, "n2")
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"
    # Reads trust the access token until it expires (documented).
    assert session.get("/api/content/ledger/alice/").status_code == 200
    # The other session still writes; its refresh keeps the session too.
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Bearer {other['access']}")
    assert spend(device, "n3").status_code == 201
    refreshed = api_client.post(
        "/api/auth/token/refresh/", {"refresh": other["refresh"]}, format="json"
    ).json()
    device.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed['access']}")
    assert spend(device, "n4").status_code == 201
    api_client.post("/api/auth/logout/", {"refresh": refreshed["refresh"]}, format="json")
    assert spend(device, "n5").status_code == 401
    assert alice.is_active


def test_logout_revokes_writes_with_djangos_own_backend_too(api_client, settings):
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
    test_logout_stops_the_sessions_writes_at_once(api_client)


def _login(client) -> dict:
    from tests.factories import PASSWORD

    return client.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    ).json()


def test_a_refresh_token_minted_as_its_session_logged_out_does_not_refresh(api_client):
    from rest_framework_simplejwt.tokens import RefreshToken

    UserFactory(username="alice")
    tokens = _login(api_client)
    # What a refresh racing the logout mints: a new, unblacklisted refresh
    # token of the same session.
    raced = RefreshToken(tokens["refresh"])
    raced.set_jti()
    raced.set_exp()
    raced.outstand()
    assert (
        api_client.post(
            "/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json"
        ).status_code
        == 205
    )
    response = api_client.post("/api/auth/token/refresh/", {"refresh": str(raced)}, format="json")
    assert response.status_code == 401, response.content
    assert "logged out" in response.json()["detail"]


def test_logout_forgets_sessions_whose_tokens_have_all_expired(api_client):
    from datetime import timedelta

    from django.utils import timezone

    from ledger_site.models import RevokedSession
    from ledger_site.services import session_kept_for

    alice = UserFactory(username="alice")
    now = timezone.now()
    RevokedSession.objects.create(sid="old", user=alice)
    RevokedSession.objects.create(sid="recent", user=alice)
    RevokedSession.objects.filter(sid="old").update(
        revoked_at=now - session_kept_for() - timedelta(minutes=1)
    )
    RevokedSession.objects.filter(sid="recent").update(
        revoked_at=now - session_kept_for() + timedelta(minutes=5)
    )
    tokens = _login(api_client)
    api_client.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json")
    kept = set(RevokedSession.objects.values_list("sid", flat=True))
    assert "old" not in kept
    assert "recent" in kept
    assert len(kept) == 2  # and the session just ended
