"""POST /api/<app>/ledger/batch/: atomic and independent batches over HTTP."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from ledger_core.models import Balance, LedgerEntry
from tests.conftest import fund

pytestmark = pytest.mark.django_db

BATCH = "/api/content/ledger/batch/"


def item(owner="alice", operation="CREDIT_ADD", nonce="n", **extra):
    return {"owner_id": owner, "operation": operation, "nonce": nonce, **extra}


def test_atomic_batch_created(manager_client):
    response = manager_client.post(
        BATCH,
        {"entries": [item(nonce="a", amount=5), item("bob", nonce="b", amount=3)]},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["atomic"] is True
    assert [r["status"] for r in body["results"]] == [201, 201]
    assert body["results"][0]["entry"]["balance_after"] == 5
    assert body["results"][1]["entry"]["app"] == "content"


def test_atomic_batch_failure_names_the_entry_and_stores_nothing(manager_client):
    fund("alice", 2)
    response = manager_client.post(
        BATCH,
        {
            "entries": [
                item("bob", nonce="b", amount=3),
                item(operation="CREDIT_SPEND", nonce="s", amount=-5),
            ]
        },
        format="json",
    )
    assert response.status_code == 409
    body = response.json()
    assert (body["code"], body["index"], body["balance"], body["required"]) == (
        "insufficient_balance",
        1,
        2,
        5,
    )
    assert not Balance.objects.filter(owner_id="bob").exists()
    assert LedgerEntry.objects.count() == 1


def test_atomic_batch_invalid_item_is_400_with_index(manager_client):
    response = manager_client.post(
        BATCH, {"entries": [item(nonce="a", amount=5), item(owner="bad owner")]}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["index"] == 1 and body["field"] == "owner_id"
    assert not LedgerEntry.objects.exists()


def test_non_atomic_batch_lists_each_result(manager_client):
    fund("alice", 1)
    response = manager_client.post(
        BATCH,
        {
            "atomic": False,
            "entries": [
                item(operation="CREDIT_SPEND", nonce="s1", amount=-1),
                item(operation="CREDIT_SPEND", nonce="s2", amount=-1),
                item("bob", nonce="g", amount=4),
                item("bob", nonce="x", operation="REFERRAL_BONUS"),
                "not an object",
                item("bob", nonce="g", amount=4),
            ],
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 201, 400, 400, 200]
    assert results[1]["error"]["code"] == "insufficient_balance"
    assert results[3]["error"]["allowed"]
    assert results[5]["entry"]["id"] == results[2]["entry"]["id"]
    assert Balance.objects.get(owner_id="bob").balance == 4


def test_batch_replay_is_idempotent(manager_client):
    payload = {"entries": [item(nonce="a", amount=5)]}
    assert manager_client.post(BATCH, payload, format="json").status_code == 201
    again = manager_client.post(BATCH, payload, format="json")
    assert again.status_code == 200
    assert again.json()["results"][0]["status"] == 200
    assert Balance.objects.get(owner_id="alice").balance == 5


def test_owner_batch_obeys_owner_rules(alice_client, other_user):
    fund("alice", 10)
    response = alice_client.post(
        BATCH,
        {
            "atomic": False,
            "entries": [
                item(operation="CREDIT_SPEND", nonce="s"),
                item(operation="CREDIT_ADD", nonce="mint", amount=100),
                item("bob", operation="CREDIT_SPEND", nonce="steal"),
                item(operation="CREDIT_SPEND", nonce="s3", amount=-3),
            ],
        },
        format="json",
    )
    assert [r["status"] for r in response.json()["results"]] == [201, 403, 403, 400]
    assert Balance.objects.get(owner_id="alice").balance == 9


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"entries": []},
        {"entries": "x"},
        {"entries": [item()] * 1001},
        {"entries": [item()], "atomic": "maybe"},
        [item()],
    ],
)
def test_bad_batch_bodies_are_400(manager_client, payload):
    response = manager_client.post(BATCH, payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not LedgerEntry.objects.exists()


def test_batch_requires_auth(api_client):
    assert api_client.post(BATCH, {"entries": [item()]}, format="json").status_code == 401


@pytest.mark.parametrize("username", ["Batch", "batch", "holds", "HOLDS", ".", ".."])
def test_a_list_route_segment_is_a_reserved_username(api_client, username):
    # ledger/batch/ and ledger/holds/ are list routes: a user's own ledger URL
    # is not one (a GET there is the balance of the owner batch or holds). Nor is
    # it a dot segment: ledger/../ reaches most HTTP clients' servers as the parent.
    response = api_client.post(
        "/api/auth/register/",
        {"username": username, "password": "correct-Horse-battery-9"},
        format="json",
    )
    assert response.status_code == 400
    assert "reserved" in str(response.json())
    assert not get_user_model().objects.filter(username__iexact=username).exists()


@pytest.mark.parametrize("username", ["entries", "..."])
def test_other_usernames_are_not_reserved(api_client, username):
    # "entries" is only a path segment under ledger/<owner_id>/ and ledger/entries/<id>/;
    # three dots are no dot segment.
    response = api_client.post(
        "/api/auth/register/",
        {"username": username, "password": "correct-Horse-battery-9"},
        format="json",
    )
    assert response.status_code == 201
    token = api_client.post(
        "/api/auth/token/",
        {"username": username, "password": "correct-Horse-battery-9"},
        format="json",
    ).json()["access"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    read = api_client.get(f"/api/content/ledger/{username}/")
    assert read.status_code == 200
    assert read.json()["owner_id"] == username
