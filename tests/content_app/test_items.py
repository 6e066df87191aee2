"""Content items paid with credits: atomicity, idempotency, access entries."""

from __future__ import annotations

import pytest
from django.db import transaction

from content_app.models import ContentItem
from content_app.services import item_create
from ledger_core.actors import Actor
from ledger_core.models import Balance, LedgerEntry
from tests.conftest import bearer_client, fund

pytestmark = pytest.mark.django_db

ITEMS = "/api/content/items/"


def create(client, **kwargs):
    return client.post(ITEMS, {"title": "Hello", "body": "World", **kwargs}, format="json")


def test_create_item_pays_content_creation(alice_client, user):
    fund("alice", 12)
    response = create(alice_client)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["owner"] == "alice" and data["title"] == "Hello" and data["body"] == "World"
    entry = LedgerEntry.objects.get(pk=data["payment_entry_id"])
    assert (entry.operation, entry.amount, entry.owner_id, entry.app) == (
        "CONTENT_CREATION",
        -5,
        "alice",
        "content",
    )
    assert entry.metadata == {"item_id": data["id"]}
    assert Balance.objects.get(owner_id="alice").balance == 7


def test_insufficient_credits_creates_no_item(alice_client, user):
    fund("alice", 4)
    response = create(alice_client)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "insufficient_balance" and body["required"] == 5
    assert not ContentItem.objects.exists()
    assert Balance.objects.get(owner_id="alice").balance == 4


def test_forced_failure_after_payment_leaves_neither(user):
    fund("alice", 10)
    actor = Actor.for_user(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        item_create(owner=user, title="t", body="b", actor=actor, nonce="n1")
        assert ContentItem.objects.count() == 1  # paid and stored inside the transaction
        raise RuntimeError("failure after the payment")
    assert not ContentItem.objects.exists()
    assert LedgerEntry.objects.filter(operation="CONTENT_CREATION").count() == 0
    assert Balance.objects.get(owner_id="alice").balance == 10


def test_failure_saving_item_after_payment_rolls_back_payment(user, monkeypatch):
    fund("alice", 10)
    original_save = ContentItem.save

    def failing_save(self, *args, **kwargs):
        if kwargs.get("update_fields") == ["payment_entry_id"]:
            raise RuntimeError("disk full")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(ContentItem, "save", failing_save)
    with pytest.raises(RuntimeError):
        item_create(owner=user, title="t", body="b", actor=Actor.for_user(user))
    assert not ContentItem.objects.exists()
    assert Balance.objects.get(owner_id="alice").balance == 10


def test_retry_with_nonce_returns_same_item_and_pays_once(alice_client, user):
    fund("alice", 20)
    first = create(alice_client, nonce="create-1")
    again = create(alice_client, nonce="create-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert ContentItem.objects.count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 15


def test_nonce_reuse_with_other_content_conflicts(alice_client, user):
    fund("alice", 20)
    create(alice_client, nonce="create-1")
    response = create(alice_client, nonce="create-1", title="Other")
    assert response.status_code == 409 and response.json()["code"] == "nonce_conflict"


def test_without_nonce_each_post_creates_and_pays(alice_client, user):
    fund("alice", 20)
    assert create(alice_client).status_code == 201
    assert create(alice_client).status_code == 201
    assert Balance.objects.get(owner_id="alice").balance == 10


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"title": "", "body": "b"},
        {"title": "t" * 201, "body": "b"},
        {"title": "t"},
        {"title": ["t"], "body": "b"},
        {"title": "t", "body": 5},
        {"title": "t", "body": "b\u0000"},
        {"title": "t", "body": "b", "nonce": "has space"},
        {"title": "t", "body": "b", "nonce": "x" * 97},
    ],
)
def test_bad_item_input_is_400(alice_client, user, payload):
    fund("alice", 20)
    response = alice_client.post(ITEMS, payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not ContentItem.objects.exists()


def test_list_and_detail_show_only_own_items(alice_client, user, other_user):
    fund("alice", 20)
    fund("bob", 20)
    ids = [create(alice_client, title=f"t{i}").json()["id"] for i in range(3)]
    bob_item = create(bearer_client(other_user), title="bob's").json()["id"]
    listing = alice_client.get(ITEMS, {"page_size": 2}).json()
    assert [i["id"] for i in listing["results"]] == [ids[2], ids[1]]
    rest = alice_client.get(listing["next"]).json()
    assert [i["id"] for i in rest["results"]] == [ids[0]]
    assert alice_client.get(f"{ITEMS}{ids[0]}/").json()["title"] == "t0"
    assert alice_client.get(f"{ITEMS}{bob_item}/").status_code == 404
    assert alice_client.get(f"{ITEMS}abc/").status_code == 404
    assert alice_client.get(f"{ITEMS}%C2%B2/").status_code == 404  # "\u00b2".isdigit()
    assert alice_client.post(f"{ITEMS}%C2%B2/access/", {}, format="json").status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "garbage"}, "cursor"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "x"}, "page_size"),
        ({"page_size": "-2"}, "page_size"),
        ({"page_size": "\u00b2"}, "page_size"),
    ],
)
def test_item_list_bad_page_query_is_400_as_for_entries(alice_client, user, params, field):
    response = alice_client.get(ITEMS, params)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]


def test_item_list_page_size_above_the_maximum_is_lowered_to_it(alice_client, user):
    fund("alice", 5 * 101)
    for i in range(101):
        item_create(owner=user, title=f"t{i}", body="", nonce=None, actor=Actor.for_user(user))
    assert len(alice_client.get(ITEMS, {"page_size": 500}).json()["results"]) == 100


def test_access_any_item_records_zero_entry(alice_client, user, other_user):
    fund("bob", 10)
    bob_item = create(bearer_client(other_user), body="secret body").json()
    response = alice_client.post(f"{ITEMS}{bob_item['id']}/access/", {}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["body"] == "secret body"
    entry = LedgerEntry.objects.get(pk=data["access_entry_id"])
    assert (entry.owner_id, entry.operation, entry.amount) == ("alice", "CONTENT_ACCESS", 0)


def test_access_with_nonce_is_idempotent(alice_client, user):
    fund("alice", 10)
    item = create(alice_client).json()
    url = f"{ITEMS}{item['id']}/access/"
    first = alice_client.post(url, {"nonce": "read-1"}, format="json")
    again = alice_client.post(url, {"nonce": "read-1"}, format="json")
    assert again["Idempotent-Replayed"] == "true"
    assert first.json()["access_entry_id"] == again.json()["access_entry_id"]
    assert LedgerEntry.objects.filter(operation="CONTENT_ACCESS").count() == 1


def test_access_unknown_item_is_404(alice_client, user):
    response = alice_client.post(f"{ITEMS}999999/access/", {}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert alice_client.post(f"{ITEMS}9{'9' * 30}/access/", {}, format="json").status_code == 404
    assert not LedgerEntry.objects.exists()


def test_items_require_auth(api_client):
    assert api_client.get(ITEMS).status_code == 401
    assert api_client.post(ITEMS, {"title": "t", "body": "b"}, format="json").status_code == 401
