"""The hold endpoints through Django's test client: every status code and body."""

from __future__ import annotations

import pytest

from ledger_core.models import Balance, HoldStatus, LedgerEntry, LedgerHold
from tests.conftest import bearer_client, fund
from tests.ledger_core.test_api import CONTENT, REWARDS, assert_error
from tests.ledger_core.test_holds import expire

pytestmark = pytest.mark.django_db

HOLDS = CONTENT + "holds/"


def hold_body(**kwargs):
    return {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "h1", **kwargs}


def place(client, **kwargs):
    return client.post(HOLDS, hold_body(**kwargs), format="json")


def test_place_hold_and_read_balance(alice_client):
    fund("alice", 5)
    response = place(alice_client)
    assert response.status_code == 201, response.content
    data = response.json()
    assert list(data) == [
        "id", "owner_id", "app", "operation", "amount", "status", "expires_at", "nonce",
        "created_at", "resolved_at", "entry",
    ]  # fmt: skip
    assert (data["amount"], data["status"], data["app"], data["entry"]) == (
        -1, "pending", "content", None,
    )  # fmt: skip
    balance = alice_client.get(f"{CONTENT}alice/").json()
    assert (balance["balance"], balance["held"], balance["available"]) == (5, 1, 4)
    # Held credits are held for every app sharing the wallet.
    assert alice_client.get(f"{REWARDS}alice/").json()["available"] == 4


def test_hold_replay_and_conflict(manager_client):
    fund("alice", 5)
    first = place(manager_client, amount=-2)
    again = place(manager_client, amount=-2)
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    conflict = assert_error(place(manager_client, amount=-3), 409, "nonce_conflict")
    assert conflict["hold_id"] == first.json()["id"]
    assert LedgerHold.objects.count() == 1


def test_hold_refusals(alice_client, manager_client, other_user, api_client):
    fund("alice", 2)
    refused = assert_error(place(manager_client, amount=-3), 409, "insufficient_balance")
    assert (refused["balance"], refused["available"], refused["required"]) == (2, 2, 3)
    unknown = assert_error(place(manager_client, operation="CREDIT_ADD"), 400, "invalid")
    assert unknown["allowed"] == ["CREDIT_SPEND", "CONTENT_CREATION"]
    for expires_in in (0, 604801, "soon", 1.5):
        assert_error(place(manager_client, expires_in=expires_in), 400, "invalid")
    assert_error(place(alice_client, amount=-2), 400, "invalid")  # owners: configured amount
    assert_error(place(bearer_client(other_user)), 403, "forbidden")
    assert place(api_client).status_code == 401
    assert not LedgerHold.objects.exists()


def test_get_hold_and_list_with_status(alice_client, other_user):
    fund("alice", 5)
    first = place(alice_client).json()
    second = place(alice_client, nonce="h2").json()
    expire(first["id"])
    got = alice_client.get(f"{HOLDS}{first['id']}/")
    assert got.status_code == 200 and got.json()["status"] == "expired"
    listing = alice_client.get(f"{CONTENT}alice/holds/").json()
    assert [h["id"] for h in listing["results"]] == [second["id"], first["id"]]
    pending = alice_client.get(f"{CONTENT}alice/holds/?status=pending").json()["results"]
    assert [h["id"] for h in pending] == [second["id"]]
    expired = alice_client.get(f"{CONTENT}alice/holds/?status=expired").json()["results"]
    assert [h["id"] for h in expired] == [first["id"]]
    assert_error(alice_client.get(f"{CONTENT}alice/holds/?status=gone"), 400, "invalid")
    by_nonce = alice_client.get(f"{CONTENT}alice/holds/?nonce=h2").json()["results"]
    assert [h["id"] for h in by_nonce] == [second["id"]]
    assert (
        alice_client.get(f"{CONTENT}alice/holds/?nonce=h2&status=expired").json()["results"] == []
    )
    assert alice_client.get(f"{CONTENT}alice/holds/?nonce=h3").json()["results"] == []
    assert_error(alice_client.get(f"{CONTENT}alice/holds/?nonce=a%20b"), 400, "invalid")
    other = bearer_client(other_user)
    assert_error(other.get(f"{CONTENT}alice/holds/"), 403, "forbidden")
    assert_error(other.get(f"{HOLDS}{first['id']}/"), 403, "forbidden")
    # A hold belongs to the app that placed it.
    assert_error(alice_client.get(f"{REWARDS}holds/{first['id']}/"), 404, "not_found")
    assert_error(alice_client.get(f"{HOLDS}999999/"), 404, "not_found")


def test_capture_statuses(manager_client):
    fund("alice", 5)
    hold = place(manager_client, amount=-3).json()
    capture = f"{HOLDS}{hold['id']}/capture/"
    response = manager_client.post(capture, {}, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["entry"]["amount"], data["entry"]["balance_after"], data["entry"]["hold"]) == (
        -3, 2, hold["id"],
    )  # fmt: skip
    assert data["hold"]["status"] == "captured" and data["hold"]["entry"] == data["entry"]["id"]
    again = manager_client.post(capture, {"amount": -3}, format="json")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["entry"]["id"] == data["entry"]["id"]
    other_amount = assert_error(
        manager_client.post(capture, {"amount": -1}, format="json"), 409, "hold_not_pending"
    )
    assert other_amount["status"] == "captured"
    void = manager_client.post(f"{HOLDS}{hold['id']}/void/", {}, format="json")
    assert_error(void, 409, "hold_not_pending")
    assert_error(
        manager_client.post(f"{HOLDS}999999/capture/", {}, format="json"), 404, "not_found"
    )
    assert_error(
        manager_client.post(f"{REWARDS}holds/{hold['id']}/capture/", {}, format="json"),
        404,
        "not_found",
    )
    assert LedgerEntry.objects.filter(hold=hold["id"]).count() == 1


def test_partial_capture_and_bad_amounts(manager_client):
    fund("alice", 5)
    hold = place(manager_client, amount=-3).json()
    capture = f"{HOLDS}{hold['id']}/capture/"
    for amount in (-4, 0, 2, "x", 1.5):
        assert_error(
            manager_client.post(capture, {"amount": amount}, format="json"), 400, "invalid"
        )
    response = manager_client.post(capture, {"amount": -2}, format="json")
    assert response.status_code == 201 and response.json()["entry"]["amount"] == -2
    balance = manager_client.get(f"{CONTENT}alice/").json()
    assert (balance["balance"], balance["held"], balance["available"]) == (3, 0, 3)


def test_capture_of_an_expired_hold(manager_client):
    fund("alice", 5)
    hold = place(manager_client, amount=-3).json()
    expire(hold["id"])
    body = assert_error(
        manager_client.post(f"{HOLDS}{hold['id']}/capture/", {}, format="json"), 409, "hold_expired"
    )
    assert body["status"] == "expired"
    void = manager_client.post(f"{HOLDS}{hold['id']}/void/", {}, format="json")
    assert void.status_code == 200 and void.json()["status"] == "expired"
    assert not LedgerEntry.objects.filter(hold=hold["id"]).exists()


def test_void_statuses(alice_client, other_user):
    fund("alice", 5)
    hold = place(alice_client).json()
    void = f"{HOLDS}{hold['id']}/void/"
    assert_error(bearer_client(other_user).post(void, {}, format="json"), 403, "forbidden")
    response = alice_client.post(void, {"reason": "job failed"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "voided"
    again = alice_client.post(void, {}, format="json")
    assert again.status_code == 200 and again.json()["status"] == "voided"
    assert_error(
        alice_client.post(f"{HOLDS}{hold['id']}/capture/", {}, format="json"),
        409,
        "hold_not_pending",
    )
    assert_error(alice_client.post(void, {"reason": 5}, format="json"), 400, "invalid")
    assert Balance.objects.get(owner_id="alice").held == 0


def test_spend_refused_while_credits_are_held(alice_client, manager_client):
    fund("alice", 2)
    place(manager_client, amount=-2)
    spend = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "s1"}
    refused = assert_error(alice_client.post(CONTENT, spend, format="json"), 409,
                           "insufficient_balance")  # fmt: skip
    assert (refused["balance"], refused["available"]) == (2, 0)


def test_hold_dry_run(alice_client, settings):
    settings.RATE_LIMIT_LEDGER_WRITE = "1/m"
    fund("alice", 5)
    for _ in range(3):
        response = alice_client.post(HOLDS + "?dry_run=true", hold_body(), format="json")
        assert response.status_code == 200, response.content
        data = response.json()
        assert data["dry_run"] is True and data["hold"]["id"] is None
        assert data["hold"]["status"] == "pending"
    assert not LedgerHold.objects.exists()
    refused = alice_client.post(HOLDS + "?dry_run=true", hold_body(owner_id="bob"), format="json")
    assert_error(refused, 403, "forbidden")
    assert place(alice_client).status_code == 201
    assert LedgerHold.objects.get().status == HoldStatus.PENDING
