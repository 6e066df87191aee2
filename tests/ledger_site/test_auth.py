"""Registration, JWT tokens, refresh rotation, logout and /me, as DESIGN.md describes."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from ledger_core.models import Balance, LedgerEntry
from tests.conftest import bearer_client, fund
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"


def register(client, username="carol", password=PASSWORD, **extra):
    return client.post(
        REGISTER, {"username": username, "password": password, **extra}, format="json"
    )


def test_register_creates_user_with_signup_credit(api_client):
    response = register(api_client, email="carol@example.com")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["username"] == "carol" and data["owner_id"] == "carol"
    assert data["balance"] == 3
    assert isinstance(data["id"], int)
    entry = LedgerEntry.objects.get(owner_id="carol")
    assert (entry.operation, entry.amount, entry.app) == ("SIGNUP_CREDIT", 3, "site")
    assert "password" not in data


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "dave", "password": "123"},
        {"username": "dave", "password": "password"},
        {"username": "dave", "password": "83920175364"},
        {"username": "", "password": PASSWORD},
        {"username": "has space", "password": PASSWORD},
        {"username": "sl/ash", "password": PASSWORD},
        {"username": "ünï", "password": PASSWORD},
        {"username": "x" * 129, "password": PASSWORD},
        {"username": "dave", "password": PASSWORD, "email": "not-an-email"},
        {"username": "dave"},
        {"password": PASSWORD},
        {"username": ["dave"], "password": PASSWORD},
    ],
)
def test_register_rejects_bad_input(api_client, payload):
    response = api_client.post(REGISTER, payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert not get_user_model().objects.filter(username="dave").exists()
    assert not LedgerEntry.objects.exists()


def test_register_taken_username_case_insensitive(api_client):
    assert register(api_client, "carol").status_code == 201
    for name in ("carol", "CAROL"):
        response = register(api_client, name)
        assert response.status_code == 400
        assert "username" in response.json()["errors"]
    assert Balance.objects.get(owner_id="carol").balance == 3


def test_database_refuses_usernames_differing_only_in_case():
    from django.db import IntegrityError, transaction

    UserFactory(username="carol")
    with pytest.raises(IntegrityError), transaction.atomic():
        get_user_model().objects.create_user(username="Carol", password=PASSWORD)


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_differing_in_case_make_one_user():
    import threading

    for round_ in range(4):
        names = [f"dave{round_}", f"DAVE{round_}"]
        barrier = threading.Barrier(len(names))
        statuses: list[int] = []

        def attempt(name: str) -> None:
            from django.db import connection

            try:
                client = APIClient()
                barrier.wait()
                statuses.append(register(client, name).status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=attempt, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(statuses) == [201, 400], statuses
        assert get_user_model().objects.filter(username__iexact=names[0]).count() == 1


def test_register_rolls_back_user_when_signup_credit_fails(api_client, monkeypatch):
    from ledger_site import services

    def broken(**kwargs):
        raise RuntimeError("ledger down")

    monkeypatch.setattr(services, "entry_post", broken)
    with pytest.raises(RuntimeError):
        register(api_client, "erin")
    assert not get_user_model().objects.filter(username="erin").exists()


def test_token_json_and_form(api_client, user):
    for response in (
        api_client.post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json"),
        api_client.post(TOKEN, {"username": "alice", "password": PASSWORD}),
    ):
        assert response.status_code == 200, response.content
        data = response.json()
        assert data["token_type"] == "bearer"
        assert data["access_token"] == data["access"]
        assert data["refresh"]
        assert data["expires_in"] == 15 * 60


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_read_without_regard_to_case(api_client, user, scheme):
    """A client that builds the header from ``token_type`` sends "bearer"."""
    pair = tokens(api_client)
    for method in ("get", "post"):  # claims for reads, the database for writes
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {pair['access_token']}")
        body = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": f"c{scheme}"}
        response = (
            client.get("/api/content/ledger/alice/")
            if method == "get"
            else client.post("/api/content/ledger/", body, format="json")
        )
        assert response.status_code in (200, 409), (scheme, method, response.content)


def test_token_wrong_password_is_401(api_client, user):
    response = api_client.post(TOKEN, {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_token_missing_fields_is_400(api_client):
    response = api_client.post(TOKEN, {"username": "alice"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_token_for_inactive_user_is_401(api_client):
    UserFactory(username="sleepy", is_active=False)
    response = api_client.post(TOKEN, {"username": "sleepy", "password": PASSWORD}, format="json")
    assert response.status_code == 401


def tokens(client, username="alice"):
    return client.post(TOKEN, {"username": username, "password": PASSWORD}, format="json").json()


def test_full_flow_register_token_post_balance_history(api_client):
    register(api_client, "carol")
    pair = tokens(api_client, "carol")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    spend = client.post(
        "/api/content/ledger/",
        {"owner_id": "carol", "operation": "CREDIT_SPEND", "nonce": "first-spend"},
        format="json",
    )
    assert spend.status_code == 201
    assert client.get("/api/content/ledger/carol/").json()["balance"] == 2
    history = client.get("/api/content/ledger/carol/entries/").json()["results"]
    assert [e["operation"] for e in history] == ["CREDIT_SPEND", "SIGNUP_CREDIT"]


def test_refresh_rotates_and_old_refresh_is_blacklisted(api_client, user):
    pair = tokens(api_client)
    response = api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) >= {"access", "refresh"}
    assert rotated["refresh"] != pair["refresh"]
    again = api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert again.status_code == 401


PASSWORD_URL = "/api/auth/password/"
NEW_PASSWORD = "another-Horse-battery-7"


def test_password_change_answers_new_tokens_and_stops_the_old_ones(api_client, user):
    fund("alice", 5)
    old = tokens(api_client)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {old['access']}")
    response = client.post(PASSWORD_URL, {"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                           format="json")  # fmt: skip
    assert response.status_code == 200, response.content
    assert not response.cookies  # a token's client is not given a browser session
    new = response.json()
    assert set(new) == {"access", "refresh", "access_token", "token_type", "expires_in"}
    assert new["token_type"] == "bearer" and new["access_token"] == new["access"]
    spend = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "after-change"}
    # The old tokens no longer write or refresh; the new ones do.
    assert client.post("/api/content/ledger/", spend, format="json").status_code == 401
    assert api_client.post(REFRESH, {"refresh": old["refresh"]}, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {new['access']}")
    assert client.post("/api/content/ledger/", spend, format="json").status_code == 201
    assert api_client.post(REFRESH, {"refresh": new["refresh"]}, format="json").status_code == 200
    # Logging in takes the new password only.
    login = {"username": "alice", "password": PASSWORD}
    assert api_client.post(TOKEN, login, format="json").status_code == 401
    login["password"] = NEW_PASSWORD
    assert api_client.post(TOKEN, login, format="json").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"old_password": "wrong", "new_password": NEW_PASSWORD}, "old_password"),
        ({"old_password": PASSWORD, "new_password": "alice"}, "new_password"),  # weak
        ({"old_password": PASSWORD, "new_password": "12345678901"}, "new_password"),
        ({"old_password": PASSWORD}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "old_password"),
    ],
)
def test_password_change_refusals_change_nothing(user, body, field):
    response = bearer_client(user).post(PASSWORD_URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_password_change_needs_a_login(api_client, user):
    body = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = api_client.post(PASSWORD_URL, body, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_password_change_keeps_the_browser_session(user):
    browser = Client()
    browser.force_login(user)
    response = browser.post(PASSWORD_URL, {"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                            content_type="application/json")  # fmt: skip
    assert response.status_code == 200, response.content
    assert browser.get("/api/auth/me/").status_code == 200
    # Another browser session of the same user ends, as Django's own password change does.
    other = Client()
    other.force_login(user)
    browser.post(PASSWORD_URL, {"old_password": NEW_PASSWORD, "new_password": PASSWORD},
                 content_type="application/json")  # fmt: skip
    assert other.get("/api/auth/me/").status_code in (401, 403)


def test_refresh_garbage_is_401(api_client):
    response = api_client.post(REFRESH, {"refresh": "garbage"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_logout_blacklists_refresh(api_client, user):
    pair = tokens(api_client)
    response = api_client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 205
    assert response.content == b""
    assert api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json").status_code == 401
    assert api_client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json").status_code == 401


def test_logout_with_access_token_or_garbage_is_401(api_client, user):
    pair = tokens(api_client)
    assert api_client.post(LOGOUT, {"refresh": pair["access"]}, format="json").status_code == 401
    assert api_client.post(LOGOUT, {"refresh": "x"}, format="json").status_code == 401


def test_me(api_client, manager):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens(api_client, 'manager')['access']}")
    data = client.get(ME).json()
    assert data["username"] == "manager" and data["owner_id"] == "manager"
    assert data["balance"] == 0
    assert data["is_staff"] is False
    assert data["permissions"] == ["ledger_core.post_any_entry"]
    assert set(data) == {
        "id",
        "username",
        "owner_id",
        "email",
        "email_verified",
        "is_staff",
        "balance",
        "permissions",
    }


def test_me_requires_auth(api_client):
    response = api_client.get(ME)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _me_with(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(ME)


def test_forged_token_is_401(user):
    import jwt

    forged = jwt.encode(
        {"token_type": "access", "user_id": str(user.pk), "exp": 9999999999, "jti": "x"},
        "not-the-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    response = _me_with(forged)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_altered_token_is_401(user, other_user):
    token = str(AccessToken.for_user(user))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["user_id"] = str(other_user.pk)
    assert _me_with(f"{header}.{_b64(claims)}.{signature}").status_code == 401


def test_alg_none_token_is_401(user):
    token = str(AccessToken.for_user(user))
    claims_part = token.split(".")[1]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{claims_part}."
    assert _me_with(unsigned).status_code == 401


def test_expired_token_is_401(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert _me_with(str(token)).status_code == 401


def test_refresh_token_cannot_be_used_as_access(api_client, user):
    assert _me_with(tokens(api_client)["refresh"]).status_code == 401


@override_settings(SIMPLE_JWT={"ACCESS_TOKEN_LIFETIME": timedelta(minutes=1)})
def test_garbage_authorization_header_is_401(user):
    for header in ("Bearer", "Bearer a b", "Bearer " + "x" * 5000, "Basic abc"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get(ME).status_code == 401, header


def test_register_ignores_stale_bearer_header(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer expired.or.garbage")
    assert register(api_client, "frank").status_code == 201


def test_browsable_api_session_login(client, user):
    page = client.get("/api/auth/session/login/")
    assert page.status_code == 200
    response = client.post(
        "/api/auth/session/login/?next=/api/content/ledger/alice/",
        {"username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 302
    balance = client.get("/api/content/ledger/alice/", HTTP_ACCEPT="text/html")
    assert balance.status_code == 200
    assert b"Log out" in balance.content or b"logout" in balance.content


def test_register_cannot_take_over_an_existing_ledger(api_client):
    from tests.conftest import fund

    fund("ghost", 50)  # e.g. the ledger of a deleted account
    response = register(api_client, "ghost")
    assert response.status_code == 400
    assert "username" in response.json()["errors"]
    assert not get_user_model().objects.filter(username="ghost").exists()
    assert Balance.objects.get(owner_id="ghost").balance == 50


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_expired_access_token_is_token_expired(user, method):
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = (
        client.get("/api/content/ledger/alice/")
        if method == "GET"
        else client.post(
            "/api/content/ledger/",
            {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "x"},
            format="json",
        )
    )
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"
    assert "refresh" in response.json()["detail"]


def test_expired_forged_token_is_not_valid_not_expired(user):
    import jwt

    forged = jwt.encode(
        {"token_type": "access", "user_id": str(user.pk), "exp": 1000, "jti": "x"},
        "not-the-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    response = _me_with(forged)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"
