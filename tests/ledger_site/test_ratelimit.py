"""Rate limits: per user for the ledger, per IP and username for auth, shared
across gunicorn workers through Redis, failing open when Redis is gone."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from ledger_site import ratelimit
from tests.conftest import bearer_client, fund
from tests.factories import PASSWORD, UserFactory
from tests.livehelpers import (
    call,
    dead_redis_caches,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
    temp_database,
)

pytestmark = pytest.mark.django_db


def post_spend(client, owner: str, nonce: str):
    return client.post(
        "/api/content/ledger/",
        {"owner_id": owner, "operation": "CREDIT_SPEND", "nonce": nonce},
        format="json",
    )


@override_settings(RATE_LIMIT_LEDGER_WRITE="3/m")
def test_writes_limited_per_user_with_retry_after(user, other_user):
    fund("alice", 10)
    fund("bob", 10)
    alice, bob = bearer_client(user), bearer_client(other_user)
    for i in range(3):
        assert post_spend(alice, "alice", f"a{i}").status_code == 201
    refused = post_spend(alice, "alice", "a3")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["detail"]
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= 60
    # Bob has his own budget, even from the same address.
    assert post_spend(bob, "bob", "b0").status_code == 201
    # The refused post stored nothing.
    assert bearer_client(user).get("/api/content/ledger/alice/").json()["balance"] == 7


@override_settings(RATE_LIMIT_LEDGER_READ="2/m")
def test_reads_limited_per_user(user):
    client = bearer_client(user)
    assert client.get("/api/content/ledger/alice/").status_code == 200
    assert client.get("/api/rewards/ledger/alice/entries/").status_code == 200
    response = client.get("/api/content/ledger/alice/")
    assert response.status_code == 429 and "Retry-After" in response


@override_settings(RATE_LIMIT_LEDGER_READ="2/m", RATE_LIMIT_LEDGER_WRITE="1/m")
def test_many_balances_count_once_against_the_read_limit(user):
    client = bearer_client(user)
    many = {"owner_ids": ["alice"] * 3}
    for _ in range(2):
        assert client.post("/api/content/ledger/balances/", many, format="json").status_code == 200
    refused = client.post("/api/content/ledger/balances/", many, format="json")
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    # The write budget was not touched.
    fund("alice", 1)
    assert post_spend(client, "alice", "s1").status_code == 201


@override_settings(RATE_LIMIT_AUTH="3/m")
def test_token_limited_per_ip(api_client):
    UserFactory(username="alice")
    for name in ("alice", "x", "y"):
        api_client.post("/api/auth/token/", {"username": name, "password": "nope"}, format="json")
    response = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    # Another client address has its own budget.
    other = api_client.post(
        "/api/auth/token/",
        {"username": "alice2", "password": PASSWORD},
        format="json",
        REMOTE_ADDR="10.9.8.7",
    )
    assert other.status_code == 401


@override_settings(RATE_LIMIT_AUTH="2/m")
def test_unreadable_login_bodies_count_per_ip_and_say_what_is_wrong(api_client):
    for _ in range(2):
        response = api_client.generic("POST", "/api/auth/token/", "{not json", "application/json")
        assert response.status_code == 400 and "parse error" in response.json()["detail"]
    response = api_client.generic("POST", "/api/auth/token/", "{not json", "application/json")
    assert response.status_code == 429


@override_settings(RATE_LIMIT_AUTH="2/m")
def test_token_limited_per_username_across_addresses(api_client):
    UserFactory(username="alice")
    for i in range(2):
        api_client.post(
            "/api/auth/token/",
            {"username": "alice", "password": "guess"},
            format="json",
            REMOTE_ADDR=f"10.0.0.{i + 1}",
        )
    response = api_client.post(
        "/api/auth/token/",
        {"username": "ALICE", "password": PASSWORD},
        format="json",
        REMOTE_ADDR="10.0.0.99",
    )
    assert response.status_code == 429


@override_settings(RATE_LIMIT_AUTH="2/m")
def test_password_guesses_limited_per_account_across_addresses(user):
    """A stolen access token cannot be used to guess the account's password."""
    client = bearer_client(user)
    for address in ("10.0.0.1", "10.0.0.2"):
        # A username in the body does not move the count to another account.
        wrong = client.post("/api/auth/password/", {"old_password": "guess", "username": address,
                            "new_password": "another-Horse-battery-7"}, format="json",
                            REMOTE_ADDR=address)  # fmt: skip
        assert wrong.status_code == 400
    right = client.post("/api/auth/password/", {"old_password": PASSWORD,
                        "new_password": "another-Horse-battery-7"}, format="json",
                        REMOTE_ADDR="10.0.0.3")  # fmt: skip
    assert right.status_code == 429
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


@override_settings(RATE_LIMIT_AUTH="2/m")
def test_register_limited_per_ip(api_client):
    for i in range(2):
        api_client.post(
            "/api/auth/register/", {"username": f"u{i}", "password": PASSWORD}, format="json"
        )
    response = api_client.post(
        "/api/auth/register/", {"username": "u9", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 429


@override_settings(RATE_LIMIT_LEDGER_READ="1/m", RATELIMIT_ENABLE=False)
def test_ratelimit_enable_off(user):
    client = bearer_client(user)
    for _ in range(5):
        assert client.get("/api/content/ledger/alice/").status_code == 200


@override_settings(RATE_LIMIT_LEDGER_READ="1/m")
def test_health_is_never_limited(client):
    for _ in range(5):
        assert client.get("/healthz").status_code == 200


@override_settings(RATE_LIMIT_AUTH="50/m")
def test_counters_are_django_ratelimits_own(api_client):
    from django.core.cache import caches
    from django_ratelimit.core import get_usage

    for _ in range(3):
        api_client.post("/api/auth/token/", {"username": "Carol", "password": "x"}, format="json")
    # django-ratelimit's own reader sees the counters: address and username.
    for group, value in (("auth:ip", "127.0.0.1"), ("auth:username", "carol")):
        usage = get_usage(None, group=group, key=lambda _g, _r, v=value: v, rate="50/m")
        assert usage["count"] == 3, (group, usage)
    redis_client = caches["ratelimit"].client.get_client(write=True)
    ttls = [redis_client.ttl(k) for k in redis_client.keys("*rl:*")]
    assert ttls and all(0 < ttl <= 65 for ttl in ttls)


@override_settings(RATE_LIMIT_LEDGER_READ="1/m")
def test_refused_read_shows_nothing(user, other_user):
    fund("bob", 9)
    client = bearer_client(user)
    response = client.get("/api/content/ledger/bob/")
    assert response.status_code == 403
    assert "9" not in response.content.decode()


def test_redis_down_fails_open_logged_and_counted(user, caplog):
    client = bearer_client(user)
    before = ratelimit.ERRORS._value.get()
    with (
        override_settings(CACHES=dead_redis_caches(), RATE_LIMIT_LEDGER_READ="1/m"),
        caplog.at_level(logging.WARNING),
    ):
        for _ in range(4):
            assert client.get("/api/content/ledger/alice/").status_code == 200
    assert ratelimit.ERRORS._value.get() >= before + 4
    outage_logs = [r for r in caplog.records if r.name == "ledger_site.ratelimit"]
    assert len(outage_logs) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_limit_is_shared_across_gunicorn_workers(tmp_path):
    with temp_database() as database_url:
        env = gunicorn_env(
            tmp_path,
            DATABASE_URL=database_url,
            RATE_LIMIT_LEDGER_READ="5/m",
            CACHE_KEY_PREFIX=f"ledger-test-{free_port()}",
        )
        manage(env, "migrate", "--noinput")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with running_server(gunicorn_cmd(port, 3), env, f"{base}/healthz"):
            status, _, _ = call(
                "POST", f"{base}/api/auth/register/", {"username": "carol", "password": PASSWORD}
            )
            assert status == 201
            _, tokens, _ = call(
                "POST", f"{base}/api/auth/token/", {"username": "carol", "password": PASSWORD}
            )
            # Each call opens a new connection, so the requests spread over the workers.
            statuses = [
                call("GET", f"{base}/api/content/ledger/carol/", token=tokens["access"])[0]
                for _ in range(12)
            ]
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 7, statuses


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_site_with_redis_on_a_closed_port_serves_everything(tmp_path):
    with temp_database() as database_url:
        env = gunicorn_env(
            tmp_path,
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        )
        manage(env, "migrate", "--noinput")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with running_server(gunicorn_cmd(port, 2), env, f"{base}/healthz"):
            status, body, _ = call(
                "POST", f"{base}/api/auth/register/", {"username": "dora", "password": PASSWORD}
            )
            assert (status, body.get("balance")) == (201, 3), body
            status, tokens, _ = call(
                "POST", f"{base}/api/auth/token/", {"username": "dora", "password": PASSWORD}
            )
            assert status == 200
            access = tokens["access"]
            post = {"owner_id": "dora", "operation": "CREDIT_SPEND", "nonce": "n1"}
            status, entry, _ = call("POST", f"{base}/api/content/ledger/", post, access)
            assert (status, entry["balance_after"]) == (201, 2)
            status, balance, _ = call("GET", f"{base}/api/content/ledger/dora/", token=access)
            assert (status, balance["balance"]) == (200, 2)
            # Ready: the database decides; the cache is reported as degraded.
            status, ready, _ = call("GET", f"{base}/readyz")
            assert status == 200, ready
            assert ready["checks"] == {"database": "ok", "cache": "degraded"}


@pytest.mark.parametrize("login", ["/admin/login/", "/api/auth/session/login/"])
@override_settings(RATE_LIMIT_AUTH="3/m")
def test_session_logins_are_limited_per_address_and_per_username(client, login):
    from django.test import Client

    UserFactory(username="root", is_staff=True, is_superuser=True)
    assert client.get(login).status_code == 200  # showing the form is not counted
    for _ in range(3):
        response = client.post(login, {"username": "root", "password": "guess"})
        assert response.status_code == 200  # the form again, with its error
    for password in ("guess", PASSWORD):  # over the limit, even the right password
        response = client.post(login, {"username": "root", "password": password})
        assert response.status_code == 429, response.status_code
        assert int(response["Retry-After"]) >= 1
        assert b"Too many login attempts" in response.content
    # Another address trying the same account is refused too (per username) ...
    elsewhere = Client(REMOTE_ADDR="10.9.8.7")
    response = elsewhere.post(login, {"username": "ROOT", "password": PASSWORD})
    assert response.status_code == 429
    # ... while another account from that address logs in.
    UserFactory(username="ops", is_staff=True)
    response = elsewhere.post(login, {"username": "ops", "password": PASSWORD})
    assert response.status_code == 302, response.status_code
