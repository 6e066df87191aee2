"""Daily rewards and referral bonuses: limits, permissions, idempotency, concurrency."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger_core.actors import Actor
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import daily_limit_frees_at
from rewards_app.models import Referral
from rewards_app.services import daily_claim, referral_create
from tests.factories import UserFactory
from tests.ledger_core.test_commands import corrupt
from tests.ledger_core.test_concurrency import run_concurrently

DAILY = "/api/rewards/daily/"
REFERRALS = "/api/rewards/referrals/"


@pytest.mark.django_db
def test_daily_claim_once_per_day(alice_client, user):
    first = alice_client.post(DAILY, {}, format="json")
    assert first.status_code == 201, first.content
    data = first.json()
    assert data["entry"]["operation"] == "DAILY_REWARD" and data["entry"]["amount"] == 1
    assert data["next_claim_at"].endswith("T00:00:00Z")
    second = alice_client.post(DAILY, {}, format="json")
    assert second.status_code == 409
    body = second.json()
    assert body["code"] == "limit_reached"
    assert body["next_claim_at"] == data["next_claim_at"]
    assert Balance.objects.get(owner_id="alice").balance == 1


@pytest.mark.django_db
def test_daily_claim_retry_with_nonce_is_replay(alice_client, user):
    first = alice_client.post(DAILY, {"nonce": "today"}, format="json")
    again = alice_client.post(DAILY, {"nonce": "today"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert again.json()["next_claim_at"] == first.json()["next_claim_at"]


@pytest.mark.django_db
def test_a_replay_of_an_earlier_days_claim_says_when_that_days_limit_ended(alice_client, user):
    first = alice_client.post(DAILY, {"nonce": "monday"}, format="json")
    assert first.status_code == 201, first.content
    # The claim was made on an earlier day (the nonce is answered the same
    # whenever it comes back): its limit key says which day it counted against.
    corrupt(
        "UPDATE ledger_core_ledgerentry SET limit_key = %s WHERE id = %s",
        ["DAILY_REWARD:2026-03-02", first.json()["entry"]["id"]],
    )
    again = alice_client.post(DAILY, {"nonce": "monday"}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["next_claim_at"] == "2026-03-03T00:00:00Z"  # not tonight
    # And the day's limit is today's again: a new claim today goes through.
    assert alice_client.post(DAILY, {}, format="json").status_code == 201


def test_daily_limit_frees_at_the_next_utc_midnight_of_the_day_posted():
    def entry(key):
        return LedgerEntry(limit_key=key)

    assert daily_limit_frees_at(entry("DAILY_REWARD:2026-12-31")) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert daily_limit_frees_at(entry("WELCOME_BONUS")) is None  # once ever: never frees
    assert daily_limit_frees_at(entry(None)) is None


@pytest.mark.django_db
def test_daily_claim_requires_auth(api_client):
    assert api_client.post(DAILY, {}, format="json").status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_concurrent_daily_claims_one_success():
    user = UserFactory(username="alice")
    actor = Actor.for_user(user)
    results = run_concurrently(10, lambda i: daily_claim(user=user, actor=actor))
    successes = [r for r in results if not isinstance(r, Exception)]
    refusals = [r for r in results if isinstance(r, Exception)]
    assert len(successes) == 1
    assert {getattr(r, "code", repr(r)) for r in refusals} == {"limit_reached"}
    assert LedgerEntry.objects.filter(operation="DAILY_REWARD").count() == 1


@pytest.mark.django_db
def test_referral_pays_referrer(manager_client, user, other_user):
    response = manager_client.post(
        REFERRALS, {"referrer": "alice", "referred": "bob"}, format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["referrer"] == "alice" and data["referred"] == "bob"
    assert data["entry"]["operation"] == "REFERRAL_BONUS" and data["entry"]["amount"] == 5
    assert data["entry"]["owner_id"] == "alice"
    assert Balance.objects.get(owner_id="alice").balance == 5


@pytest.mark.django_db
def test_referral_once_per_referred_even_for_other_referrer(manager_client, user, other_user):
    UserFactory(username="carol")
    manager_client.post(REFERRALS, {"referrer": "alice", "referred": "bob"}, format="json")
    for referrer in ("alice", "carol"):
        response = manager_client.post(
            REFERRALS, {"referrer": referrer, "referred": "bob"}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["code"] == "limit_reached"
    assert Referral.objects.count() == 1
    assert LedgerEntry.objects.filter(operation="REFERRAL_BONUS").count() == 1


@pytest.mark.django_db
def test_referral_retry_with_nonce_is_replay(manager_client, user, other_user):
    payload = {"referrer": "alice", "referred": "bob", "nonce": "ref-1"}
    first = manager_client.post(REFERRALS, payload, format="json")
    again = manager_client.post(REFERRALS, payload, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert Balance.objects.get(owner_id="alice").balance == 5


@pytest.mark.django_db
def test_referral_managers_only(alice_client, user, other_user):
    response = alice_client.post(REFERRALS, {"referrer": "alice", "referred": "bob"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    # A non-manager learns nothing about which users exist.
    response = alice_client.post(
        REFERRALS, {"referrer": "alice", "referred": "nobody"}, format="json"
    )
    assert response.status_code == 403
    assert not Referral.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"referrer": "alice", "referred": "alice"},
        {"referrer": "alice", "referred": "ghost"},
        {"referrer": "ghost", "referred": "bob"},
        {"referrer": "alice"},
        {"referrer": "al ice", "referred": "bob"},
        {"referrer": 5, "referred": "bob"},
        {"referrer": "alice", "referred": "bob", "nonce": "bad nonce"},
    ],
)
def test_referral_bad_input_is_400(manager_client, user, other_user, payload):
    response = manager_client.post(REFERRALS, payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert not Referral.objects.exists()
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_concurrent_referrals_of_one_user_pay_once():
    UserFactory(username="bob")
    referrers = [UserFactory(username=f"ref{i}").username for i in range(6)]
    manager = Actor(name="manager", owner_id="manager", can_post_any=True)
    results = run_concurrently(
        6, lambda i: referral_create(referrer=referrers[i], referred="bob", actor=manager)
    )
    successes = [r for r in results if not isinstance(r, Exception)]
    assert len(successes) == 1
    assert {getattr(r, "code", repr(r)) for r in results if isinstance(r, Exception)} == {
        "limit_reached"
    }
    assert LedgerEntry.objects.filter(operation="REFERRAL_BONUS").count() == 1
    assert Referral.objects.count() == 1


@pytest.mark.django_db
def test_rewards_ledger_post_uses_rewards_app(client_for, user):
    response = client_for(user).post(
        "/api/rewards/ledger/",
        {"owner_id": "alice", "operation": "DAILY_REWARD", "nonce": "d"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["app"] == "rewards"
