"""The per-app ledger endpoints through Django's test client: every status and body shape."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from ledger_core.api import list_route_segments
from ledger_core.models import Balance, LedgerEntry
from tests.conftest import bearer_client, fund
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CONTENT = "/api/content/ledger/"
REWARDS = "/api/rewards/ledger/"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def body(**kwargs):
    return {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "n1", **kwargs}


# --- balance -------------------------------------------------------------


def test_balance_of_own_ledger(alice_client):
    fund("alice", 7)
    response = alice_client.get(f"{CONTENT}alice/")
    assert response.status_code == 200
    data = response.json()
    assert data["owner_id"] == "alice"
    assert data["balance"] == 7 and data["version"] == 1
    assert data["updated_at"]


def test_balance_of_unknown_owner_is_zero(manager_client):
    data = manager_client.get(f"{REWARDS}nobody/").json()
    assert data == {
        "owner_id": "nobody", "balance": 0, "held": 0, "available": 0, "expiring": [],
        "seq": 0, "head_hash": "0" * 64, "version": 0, "updated_at": None,
    }  # fmt: skip


def test_cannot_read_other_owner(alice_client, other_user):
    fund("bob", 3)
    assert_error(alice_client.get(f"{CONTENT}bob/"), 403, "forbidden")
    assert_error(alice_client.get(f"{CONTENT}bob/entries/"), 403, "forbidden")


def test_auditor_and_manager_read_any(auditor, manager_client):
    fund("bob", 3)
    assert bearer_client(auditor).get(f"{CONTENT}bob/").json()["balance"] == 3
    assert manager_client.get(f"{REWARDS}bob/entries/").status_code == 200


@pytest.mark.parametrize("owner", sorted(list_route_segments()))
def test_an_owner_named_like_a_list_route_has_its_ledger_urls(manager_client, alice_client, owner):
    # ledger/batch/ and ledger/holds/ are list routes (POST); a GET there is the
    # balance of the owner of that id, like any other owner's URL (a new list
    # route shows up here and needs the same GET).
    posted = manager_client.post(
        CONTENT, body(owner_id=owner, operation="CREDIT_ADD", amount=7), format="json"
    )
    assert posted.status_code == 201, posted.content
    for app in (CONTENT, REWARDS):
        balance = manager_client.get(f"{app}{owner}/")
        assert balance.status_code == 200, balance.content
        assert (balance.json()["owner_id"], balance.json()["balance"]) == (owner, 7)
    created = posted.json()["created_at"]
    past = manager_client.get(f"{CONTENT}{owner}/", {"at": created}).json()
    assert (past["owner_id"], past["balance"], past["at"]) == (owner, 7, created)
    entries = manager_client.get(f"{CONTENT}{owner}/entries/").json()["results"]
    assert [entry["id"] for entry in entries] == [posted.json()["id"]]
    assert manager_client.get(f"{CONTENT}{owner}/holds/").status_code == 200
    assert_error(alice_client.get(f"{CONTENT}{owner}/"), 403, "forbidden")


def test_auditor_cannot_post(auditor):
    response = bearer_client(auditor).post(
        CONTENT, body(owner_id="bob", operation="CREDIT_ADD", amount=5), format="json"
    )
    assert_error(response, 403, "forbidden")
    assert not LedgerEntry.objects.exists()


def test_unauthenticated_gets_401(api_client):
    for response in (
        api_client.get(f"{CONTENT}alice/"),
        api_client.post(CONTENT, body(), format="json"),
        api_client.get(f"{CONTENT}alice/entries/"),
    ):
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("owner", ["has%20space", "x" * 129, "%C3%BC"])
def test_bad_owner_in_path_is_400(manager_client, owner):
    assert_error(manager_client.get(f"{CONTENT}{owner}/"), 400, "invalid")


# --- post ------------------------------------------------------------------


def test_post_creates_entry(alice_client):
    fund("alice", 10)
    response = alice_client.post(
        CONTENT, body(operation="CONTENT_CREATION", metadata={"item": 1}), format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) >= {
        "id",
        "owner_id",
        "app",
        "operation",
        "amount",
        "balance_after",
        "nonce",
        "created_at",
    }
    assert (data["app"], data["amount"], data["balance_after"]) == ("content", -5, 5)
    assert "Idempotent-Replayed" not in response
    assert alice_client.get(f"{CONTENT}alice/").json()["balance"] == 5


def test_replay_is_200_with_header(alice_client):
    fund("alice", 10)
    first = alice_client.post(CONTENT, body(), format="json")
    again = alice_client.post(CONTENT, body(), format="json")
    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Balance.objects.get(owner_id="alice").balance == 9


def test_nonce_conflict(alice_client):
    fund("alice", 10)
    alice_client.post(CONTENT, body(), format="json")
    response = alice_client.post(CONTENT, body(operation="CONTENT_CREATION"), format="json")
    assert_error(response, 409, "nonce_conflict")


def test_insufficient_balance_body(alice_client):
    fund("alice", 2)
    response = alice_client.post(CONTENT, body(operation="CONTENT_CREATION"), format="json")
    data = assert_error(response, 409, "insufficient_balance")
    assert data["balance"] == 2 and data["required"] == 5
    assert LedgerEntry.objects.filter(owner_id="alice").count() == 1


def test_limit_reached_body(alice_client):
    assert (
        alice_client.post(REWARDS, body(operation="DAILY_REWARD"), format="json").status_code == 201
    )
    response = alice_client.post(REWARDS, body(operation="DAILY_REWARD", nonce="n2"), format="json")
    data = assert_error(response, 409, "limit_reached")
    assert data["next_claim_at"].endswith("Z")


def test_other_app_operation_is_invalid_and_lists_allowed(alice_client, manager_client):
    response = alice_client.post(REWARDS, body(operation="CONTENT_CREATION"), format="json")
    data = assert_error(response, 400, "invalid")
    assert set(data["allowed"]) == {"DAILY_REWARD", "SIGNUP_CREDIT", "CREDIT_SPEND", "CREDIT_ADD"}
    response = alice_client.post(CONTENT, body(operation="REFERRAL_BONUS"), format="json")
    data = assert_error(response, 400, "invalid")
    assert "CONTENT_ACCESS" in data["allowed"]
    # Referral bonuses go through the referrals endpoint only.
    response = manager_client.post(
        REWARDS, body(owner_id="bob", operation="REFERRAL_BONUS"), format="json"
    )
    assert_error(response, 400, "invalid")


def test_owner_cannot_post_to_other_owner(alice_client, other_user):
    fund("bob", 5)
    response = alice_client.post(CONTENT, body(owner_id="bob"), format="json")
    assert_error(response, 403, "forbidden")
    assert Balance.objects.get(owner_id="bob").balance == 5


def test_owner_cannot_mint(alice_client):
    response = alice_client.post(CONTENT, body(operation="CREDIT_ADD", amount=1000), format="json")
    assert_error(response, 403, "forbidden")
    response = alice_client.post(CONTENT, body(operation="CREDIT_ADD"), format="json")
    assert_error(response, 403, "forbidden")
    response = alice_client.post(CONTENT, body(operation="CREDIT_SPEND", amount=5), format="json")
    assert_error(response, 400, "invalid")
    assert not LedgerEntry.objects.exists()


def test_manager_grant(manager_client):
    response = manager_client.post(
        CONTENT, body(owner_id="bob", operation="CREDIT_ADD", amount=500), format="json"
    )
    assert response.status_code == 201
    assert response.json()["balance_after"] == 500
    assert LedgerEntry.objects.get(owner_id="bob").created_by.endswith(":manager")


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"owner_id": "alice"},
        body(owner_id=""),
        body(owner_id="a b"),
        body(owner_id=" alice"),
        body(owner_id="x" * 129),
        body(owner_id="."),  # dot segments: no URL could address the owner
        body(owner_id=".."),
        body(owner_id=123),
        body(owner_id=None),
        body(owner_id=["alice"]),
        body(nonce=""),
        body(nonce=" n1"),
        body(nonce="n 1"),
        body(nonce="x" * 129),
        body(nonce="\u00e9"),
        body(nonce="nul\u0000"),
        body(nonce=5),
        body(operation=""),
        body(operation="x" * 65),
        body(operation=None),
        body(operation=["CREDIT_SPEND"]),
        body(amount="lots"),
        body(amount=1.5),
        body(amount=True),
        body(amount=None),
        body(amount=10**30),
        body(amount={"n": 1}),
        body(metadata="string"),
        body(metadata=[1, 2]),
        body(metadata={"x": "y" * 5000}),
        body(metadata={"x": "nul\u0000"}),
        body(metadata={"nul\u0000": 1}),
    ],
)
def test_bad_input_is_400_and_stores_nothing(manager_client, payload):
    fund("alice", 10)
    before = LedgerEntry.objects.count()
    response = manager_client.post(CONTENT, payload, format="json")
    assert_error(response, 400, "invalid")
    assert LedgerEntry.objects.count() == before


@pytest.mark.parametrize(
    "raw, content_type",
    [
        ("{not json", "application/json"),
        ("[1, 2, 3]", "application/json"),
        ("null", "application/json"),
        ('"string"', "application/json"),
        ("42", "application/json"),
        ('{"owner_id": "alice", "amount": NaN}', "application/json"),
        ("\xff\xfe", "application/json"),
        ('{"owner_id": "alice", "amount": 5, "amount": 500}', "application/json"),
        ('{"owner_id": "alice", "nonce": "s", "metadata": {"k": ["\\udfff"]}}', "application/json"),
    ],
)
@pytest.mark.parametrize("path", [CONTENT, "/api/auth/token/", "/api/auth/register/"])
def test_malformed_bodies_are_400(manager_client, raw, content_type, path):
    response = manager_client.generic("POST", path, raw.encode("latin-1"), content_type)
    assert_error(response, 400, "invalid")
    assert not LedgerEntry.objects.exists()
    if "{" in raw or "\xff" in raw:  # not a body that parses to a non-object
        assert "parse error" in response.json()["detail"], response.json()


POST_BODY = '"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5, "nonce": "d1"'


@pytest.mark.parametrize(
    "path, raw, key",
    [
        (CONTENT, f'{{{POST_BODY}, "owner_id": "bob"}}', "owner_id"),
        (CONTENT, f'{{{POST_BODY}, "metadata": {{"k": 1, "k": 2}}}}', "k"),
        (f"{CONTENT}batch/", f'{{"entries": [{{{POST_BODY}, "amount": 9}}]}}', "amount"),
        ("/api/auth/token/", '{"username": "a", "password": "b", "password": "c"}', "password"),
    ],
)
def test_a_key_given_twice_is_400_and_stores_nothing(manager_client, path, raw, key):
    """Python would keep the last value; a proxy in front may read the first."""
    response = manager_client.generic("POST", path, raw, "application/json")
    assert_error(response, 400, "invalid")
    assert f"duplicate key '{key}'" in response.json()["detail"]
    assert not LedgerEntry.objects.exists()


def test_metadata_text_must_be_unicode(manager_client):
    """A surrogate pair is a character; a lone surrogate is no text at all
    (not even in JSON sent inside a form field)."""
    body = f'{{{POST_BODY}, "metadata": {{"smile": "\\ud83d\\ude00", "text": "\\\\ud800"}}}}'
    response = manager_client.generic("POST", CONTENT, body, "application/json")
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == {"smile": "\U0001f600", "text": "\\ud800"}
    form = "owner_id=alice&operation=CREDIT_ADD&amount=5&nonce=f&metadata="
    form += quote('{"k": "\\ud800"}')
    response = manager_client.generic("POST", CONTENT, form, "application/x-www-form-urlencoded")
    assert_error(response, 400, "invalid")
    assert "lone surrogate" in response.json()["errors"]["metadata"][0]
    assert LedgerEntry.objects.count() == 1


def test_the_same_key_in_two_objects_is_fine(manager_client):
    body = {"entries": [
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5, "nonce": "u1"},
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5, "nonce": "u2"},
    ]}  # fmt: skip
    response = manager_client.post(f"{CONTENT}batch/", body, format="json")
    assert response.status_code == 201, response.content
    assert LedgerEntry.objects.count() == 2


def test_unsupported_media_type(manager_client):
    response = manager_client.generic("POST", CONTENT, b"<x/>", "application/xml")
    assert_error(response, 415, "unsupported_media_type")


def test_form_encoded_post_works(manager_client):
    response = manager_client.post(
        CONTENT, {"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "f1", "amount": "3"}
    )
    assert response.status_code == 201, response.content


def test_method_not_allowed_body(manager_client):
    assert_error(manager_client.get(CONTENT), 405, "method_not_allowed")
    assert_error(manager_client.delete(f"{CONTENT}alice/"), 405, "method_not_allowed")


def test_unknown_url_is_404(manager_client):
    assert manager_client.get("/api/content/nothing-here/").status_code == 404


# --- entries ----------------------------------------------------------------


def test_entries_newest_first_with_cursor_pages(alice_client):
    for i in range(5):
        fund("alice", i + 1, nonce=f"g{i}")
    fund("bob", 1)
    response = alice_client.get(f"{CONTENT}alice/entries/", {"page_size": 2})
    assert response.status_code == 200
    page = response.json()
    assert [e["nonce"] for e in page["results"]] == ["g4", "g3"]
    seen = [e["nonce"] for e in page["results"]]
    while page["next"]:
        page = alice_client.get(page["next"]).json()
        seen += [e["nonce"] for e in page["results"]]
    assert seen == ["g4", "g3", "g2", "g1", "g0"]


def test_entries_filters(alice_client):
    fund("alice", 10, nonce="a", app="content")
    fund("alice", 10, nonce="b", app="rewards")
    alice_client.post(CONTENT, body(nonce="s"), format="json")
    url = f"{CONTENT}alice/entries/"
    assert [e["nonce"] for e in alice_client.get(url, {"app": "rewards"}).json()["results"]] == [
        "b"
    ]
    got = alice_client.get(url, {"operation": "CREDIT_SPEND"}).json()["results"]
    assert [e["nonce"] for e in got] == ["s"]
    first = LedgerEntry.objects.get(nonce="b").created_at
    got = alice_client.get(url, {"since": first.isoformat()}).json()["results"]
    assert [e["nonce"] for e in got] == ["s", "b"]
    got = alice_client.get(url, {"until": first.isoformat()}).json()["results"]
    assert [e["nonce"] for e in got] == ["a"]


def test_entries_by_nonce_tell_whether_a_post_landed(alice_client, other_user):
    fund("alice", 10, nonce="grant")
    alice_client.post(CONTENT, body(nonce="order-42"), format="json")
    fund("bob", 1, nonce="order-7")
    url = f"{CONTENT}alice/entries/"
    got = alice_client.get(url, {"nonce": "order-42"}).json()
    assert [(e["nonce"], e["amount"]) for e in got["results"]] == [("order-42", -1)]
    assert got["next"] is None
    # Another owner's nonce, or one never used: an empty page, not an error.
    for nonce in ("order-7", "order-43"):
        assert alice_client.get(url, {"nonce": nonce}).json()["results"] == []
    # It combines with the other filters.
    assert (
        alice_client.get(url, {"nonce": "grant", "operation": "CREDIT_SPEND"}).json()["results"]
        == []
    )
    assert_error(bearer_client(other_user).get(url, {"nonce": "order-42"}), 403, "forbidden")
    for bad in ("with space", "x" * 129, "caf\u00e9"):
        assert_error(alice_client.get(url, {"nonce": bad}), 400, "invalid")


def test_one_entry_by_id(alice_client, manager_client, auditor, other_user, api_client):
    fund("alice", 5)
    grant = fund("alice", 10, app="rewards")
    spend = alice_client.post(CONTENT, body(nonce="s1"), format="json").json()
    reversal = manager_client.post(
        f"/api/rewards/ledger/entries/{grant.pk}/reverse/",
        {"nonce": "undo", "reason": "test"},
        format="json",
    )
    assert reversal.status_code == 201, reversal.content
    history = {e["id"]: e for e in alice_client.get(f"{CONTENT}alice/entries/").json()["results"]}
    # The wallet is shared: any app's entry reads through any app, as in the history.
    for app in ("content", "rewards"):
        for entry_id in (grant.pk, spend["id"]):
            got = alice_client.get(f"/api/{app}/ledger/entries/{entry_id}/")
            assert got.status_code == 200, got.content
            assert got.json() == history[entry_id]
    assert history[grant.pk]["reversed_by"] == reversal.json()["id"]
    assert bearer_client(auditor).get(f"{CONTENT}entries/{grant.pk}/").status_code == 200
    assert_error(bearer_client(other_user).get(f"{CONTENT}entries/{grant.pk}/"), 403, "forbidden")
    assert api_client.get(f"{CONTENT}entries/{grant.pk}/").status_code == 401
    last = LedgerEntry.objects.order_by("-pk").first().pk
    for missing in (last + 1, 0, 2**63, 10**30):
        assert_error(manager_client.get(f"{CONTENT}entries/{missing}/"), 404, "not_found")
    # Only GET: writes to an entry are a reversal, at its own URL.
    assert_error(manager_client.post(f"{CONTENT}entries/{grant.pk}/", {}), 405,
                 "method_not_allowed")  # fmt: skip


def test_an_owner_named_entries_keeps_its_ledger_urls(manager_client):
    fund("entries", 4)
    assert manager_client.get(f"{CONTENT}entries/").json()["balance"] == 4
    got = manager_client.get(f"{CONTENT}entries/entries/").json()["results"]
    assert [e["amount"] for e in got] == [4]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-45"},
        {"page_size": "-1"},
        {"page_size": "x"},
        {"page_size": "\u00b2"},  # a digit to str.isdigit(), not to int()
        {"cursor": "garbage"},
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"operation": "CREDIT_SPENT"},  # a typo would answer an empty page
        {"operation": "credit_spend"},
        {"app": "contnet"},
    ],
)
def test_entries_bad_filters_are_400(alice_client, params):
    assert_error(alice_client.get("/api/content/ledger/alice/entries/", params), 400, "invalid")


def test_an_unknown_filter_value_is_a_400_that_lists_the_known_ones(alice_client):
    fund("alice", 5)
    url = "/api/content/ledger/alice/entries/"
    body = alice_client.get(url, {"operation": "CREDIT_SPENT"}).json()
    assert "CREDIT_SPEND" in body["errors"]["operation"][0]
    assert "REFERRAL_BONUS" in body["errors"]["operation"][0]  # any app's: the wallet is shared
    body = alice_client.get(url, {"app": "contnet"}).json()
    assert "known apps: content, rewards, site" in body["errors"]["app"][0]
    # Known values filter as before, including the ledger's own operations and
    # another app's (an empty page when the owner has none).
    for params, amounts in [({"operation": "CREDIT_ADD"}, [5]), ({"app": "content"}, [5]),
                            ({"operation": "REVERSAL"}, []), ({"app": "rewards"}, []),
                            ({"operation": "REFERRAL_BONUS", "app": "rewards"}, [])]:  # fmt: skip
        response = alice_client.get(url, params)
        assert response.status_code == 200, (params, response.content)
        assert [e["amount"] for e in response.json()["results"]] == amounts, params


def test_browsable_api_renders_for_session_user(client, user):
    client.force_login(user)
    response = client.get(f"{CONTENT}alice/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"alice" in response.content


def test_session_post_requires_csrf(user):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.post(
        CONTENT, json.dumps(body(operation="DAILY_REWARD")), content_type="application/json"
    )
    assert_error(response, 403, "forbidden")


def test_deleted_user_cannot_write_with_a_live_token(db):
    ghost = UserFactory(username="ghost")
    client = bearer_client(ghost)
    ghost.delete()
    response = client.post(CONTENT, body(owner_id="ghost", operation="DAILY_REWARD"), format="json")
    assert_error(response, 401, "authentication_failed")
    assert not LedgerEntry.objects.exists()
    # Reads trust the signed claims until the access token expires (docs/design.md).
    assert client.get(f"{CONTENT}ghost/").status_code == 200


def test_revoked_manager_permission_stops_writes_at_once(db):
    from django.contrib.auth.models import Permission

    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    grant = body(owner_id="bob", operation="CREDIT_ADD", amount=5)
    assert client.post(CONTENT, grant, format="json").status_code == 201
    boss.user_permissions.remove(Permission.objects.get(codename="post_any_entry"))
    response = client.post(CONTENT, {**grant, "nonce": "n2"}, format="json")
    assert_error(response, 403, "forbidden")


def test_manager_permission_through_a_group(db):
    from django.contrib.auth.models import Group, Permission

    managers = Group.objects.create(name="managers")
    managers.permissions.add(Permission.objects.get(codename="post_any_entry"))
    grantor = UserFactory(username="grantor")
    grantor.groups.add(managers)
    client = bearer_client(grantor)
    response = client.post(
        CONTENT, body(owner_id="bob", operation="CREDIT_ADD", amount=5), format="json"
    )
    assert response.status_code == 201, response.content
    grantor.groups.remove(managers)
    response = client.post(
        CONTENT, body(owner_id="bob", operation="CREDIT_ADD", amount=5, nonce="n2"), format="json"
    )
    assert_error(response, 403, "forbidden")


def test_write_authentication_queries(db, django_assert_num_queries):
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    grant = body(owner_id="bob", operation="CREDIT_ADD", amount=5)
    # the user with its permissions (one statement: ledger_site.backends),
    # savepoint + post statement + release (3) inside the test transaction
    with django_assert_num_queries(4):
        assert client.post(CONTENT, grant, format="json").status_code == 201


@pytest.mark.parametrize("path", [CONTENT, CONTENT + "batch/"])
@pytest.mark.parametrize("depth", [33, 990, 100_000])
def test_deeply_nested_json_is_400_not_500(manager_client, path, depth):
    body = "[" * depth + "]" * depth
    response = manager_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response.json()["code"] == "invalid"
    assert "nested deeper than 32" in response.json()["detail"]
    assert not LedgerEntry.objects.exists()


def test_json_depth():
    from ledger_core.parsers import json_depth

    assert [json_depth(v) for v in (1, [], {}, [[1]], {"a": [{"b": 2}]})] == [0, 1, 1, 2, 3]


def test_metadata_nested_within_the_limit_is_accepted(manager_client):
    nested: dict = {}
    for _ in range(30):
        nested = {"n": nested}
    response = manager_client.post(
        CONTENT,
        {"owner_id": "bob", "operation": "CREDIT_ADD", "amount": 1, "nonce": "deep",
         "metadata": nested},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content


def test_entry_serializer_shows_the_entry_fields(db):
    from ledger_core.api.serializers import EntrySerializer
    from ledger_core.models import ENTRY_FIELDS

    entry = fund("alice", 7)
    data = EntrySerializer(entry).data
    assert list(data) == [*ENTRY_FIELDS, "reversed_by"]
    assert (
        data["id"] == entry.pk and data["balance_after"] == 7 and data["created_at"].endswith("Z")
    )


@pytest.mark.parametrize("path", [CONTENT, CONTENT + "batch/", "/api/auth/token/"])
def test_oversize_body_is_413_in_the_json_error_shape(manager_client, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "big",
                       "metadata": {"pad": "x" * 20_000}})  # fmt: skip
    response = manager_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 413, response.content[:300]
    assert response.json()["code"] == "too_large"
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("amount", ["5_0", "\u0665", "5.0", "0x5", "1e1", "", "+", 5.0, True])
def test_an_amount_is_an_integer_or_its_decimal_text(manager_client, amount):
    """Not every text Python's int() reads: "5_0" would post 50, "\u0665" 5."""
    body = {"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "n", "amount": amount}
    for path, payload in ((CONTENT, body), (CONTENT + "batch/", {"entries": [body]})):
        response = manager_client.post(path, payload, format="json")
        assert_error(response, 400, "invalid")
        assert "amount" in response.json()["detail"], response.json()
    assert not LedgerEntry.objects.exists()
    for index, (text, value) in enumerate((("7", 7), (" +8 ", 8))):
        response = manager_client.post(CONTENT, {**body, "nonce": f"t{index}", "amount": text})
        assert response.status_code == 201, response.content
        assert response.json()["amount"] == value


@pytest.mark.parametrize("amount", [1_000_001, 2**53 + 1, 2**70, -(2**70)])
def test_amount_bounds_read_the_same_everywhere(manager_client, amount):
    body = {"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "big", "amount": amount}
    single = manager_client.post(CONTENT, body, format="json")
    batch = manager_client.post(CONTENT + "batch/", {"entries": [body]}, format="json")
    for response in (single, batch):
        assert response.status_code == 400
        assert "amount must be at most 1000000 in absolute value" in response.json()["detail"]
    assert not LedgerEntry.objects.exists()


def test_dry_run_answers_what_the_post_would_do_and_stores_nothing(alice_client, settings):
    fund("alice", 3)
    entries_before = LedgerEntry.objects.count()
    spend = body(owner_id="alice", operation="CREDIT_SPEND", nonce="try-1")
    response = alice_client.post(CONTENT + "?dry_run=true", spend, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["dry_run"] is True
    entry = response.json()["entry"]
    assert (entry["id"], entry["amount"], entry["balance_after"]) == (None, -1, 2)
    assert LedgerEntry.objects.count() == entries_before
    assert Balance.objects.get(owner_id="alice").balance == 3
    # The nonce is still free: the real post uses it.
    real = alice_client.post(CONTENT, spend, format="json")
    assert real.status_code == 201 and real.json()["balance_after"] == 2
    # A dry run of what would replay answers with the stored entry.
    again = alice_client.post(CONTENT + "?dry_run=true", spend, format="json")
    assert again.json()["entry"]["id"] == real.json()["id"]
    # The errors the real post would get.
    big = body(owner_id="alice", operation="CONTENT_CREATION", nonce="try-2")
    assert_error(
        alice_client.post(CONTENT + "?dry_run=true", big, format="json"),
        409,
        "insufficient_balance",
    )
    other = body(owner_id="bob", operation="CREDIT_SPEND", nonce="try-3")
    assert_error(
        alice_client.post(CONTENT + "?dry_run=true", other, format="json"), 403, "forbidden"
    )
    assert LedgerEntry.objects.count() == entries_before + 1


def test_dry_run_counts_against_the_read_limit(alice_client, settings):
    settings.RATE_LIMIT_LEDGER_WRITE = "1/m"
    settings.RATE_LIMIT_LEDGER_READ = "100/m"
    fund("alice", 5)
    for n in range(3):
        spend = body(owner_id="alice", operation="CREDIT_SPEND", nonce=f"t{n}")
        assert alice_client.post(CONTENT + "?dry_run=true", spend, format="json").status_code == 200
    real = body(owner_id="alice", operation="CREDIT_SPEND", nonce="real")
    assert alice_client.post(CONTENT, real, format="json").status_code == 201


@pytest.mark.parametrize("query", ["dry_run", "dry_run=", "dry_run=yes", "dry_run=on", "dry_run=2"])
@pytest.mark.parametrize("path", [CONTENT, CONTENT + "holds/"])
def test_a_dry_run_value_other_than_true_or_false_is_refused_not_posted(alice_client, path, query):
    fund("alice", 3)
    before = LedgerEntry.objects.count()
    spend = body(owner_id="alice", operation="CREDIT_SPEND", nonce="maybe")
    response = alice_client.post(f"{path}?{query}", spend, format="json")
    error = assert_error(response, 400, "invalid")
    assert error["errors"] == {"dry_run": ["Must be true or false."]}
    assert LedgerEntry.objects.count() == before
    assert Balance.objects.get(owner_id="alice").held == 0


@pytest.mark.parametrize(
    ("query", "dry"),
    [("dry_run=TRUE", True), ("dry_run=1", True), ("dry_run=False", False), ("dry_run=0", False)],
)
def test_dry_run_true_and_false_in_any_case(alice_client, query, dry):
    fund("alice", 3)
    spend = body(owner_id="alice", operation="CREDIT_SPEND", nonce="case")
    response = alice_client.post(f"{CONTENT}?{query}", spend, format="json")
    assert response.status_code == (200 if dry else 201), response.content
    assert LedgerEntry.objects.filter(nonce="case").exists() is not dry


def test_writes_without_a_dry_run_refuse_one_instead_of_storing(manager_client):
    entry = fund("alice", 5)
    hold = manager_client.post(
        CONTENT + "holds/", body(owner_id="alice", operation="CREDIT_SPEND", nonce="h"),
        format="json",
    ).json()  # fmt: skip
    before = LedgerEntry.objects.count()
    writes = {
        "batch/": {"entries": [body(owner_id="bob", operation="CREDIT_ADD", nonce="b")]},
        f"entries/{entry.pk}/reverse/": {"nonce": "r", "reason": "test"},
        f"holds/{hold['id']}/capture/": {},
        f"holds/{hold['id']}/void/": {},
    }
    for suffix, payload in writes.items():
        response = manager_client.post(f"{CONTENT}{suffix}?dry_run=true", payload, format="json")
        assert "dry_run" in assert_error(response, 400, "invalid")["errors"], suffix
    assert LedgerEntry.objects.count() == before
    assert manager_client.get(f"{CONTENT}holds/{hold['id']}/").json()["status"] == "pending"
    # dry_run=false there is the write itself.
    voided = manager_client.post(f"{CONTENT}holds/{hold['id']}/void/?dry_run=false", {})
    assert voided.status_code == 200 and voided.json()["status"] == "voided", voided.content


@pytest.mark.parametrize("query", ["dry_run=true", "dry_run=1", "dry_run=yes", "dry%5Frun=TRUE"])
def test_an_apps_own_writes_refuse_a_dry_run_instead_of_storing(
    api_client, alice_client, manager_client, other_user, query
):
    """Any write whose view has no dry run, not only the ledger's: a client
    that asked to try it must not be charged, rewarded or registered."""
    from django.contrib.auth import get_user_model

    from content_app.models import ContentItem

    fund("alice", 20)
    item = alice_client.post("/api/content/items/", {"title": "t", "body": "b"}, format="json")
    assert item.status_code == 201, item.content
    counts = (LedgerEntry.objects.count(), ContentItem.objects.count(),
              get_user_model().objects.count())  # fmt: skip
    writes = [
        (alice_client, "/api/content/items/", {"title": "t2", "body": "b"}),
        (alice_client, f"/api/content/items/{item.json()['id']}/access/", {}),
        (alice_client, "/api/rewards/daily/", {}),
        (manager_client, "/api/rewards/referrals/", {"referrer": "alice", "referred": "bob"}),
        (api_client, "/api/auth/register/", {"username": "carol", "password": "s3cret-pass-1"}),
    ]
    for client, path, payload in writes:
        response = client.post(f"{path}?{query}", payload, format="json")
        error = assert_error(response, 400, "invalid")
        assert error["errors"] == {"dry_run": [
            "Only single posts and holds have a dry run; nothing was stored."
        ]}, path  # fmt: skip
    assert (LedgerEntry.objects.count(), ContentItem.objects.count(),
            get_user_model().objects.count()) == counts  # fmt: skip
    # dry_run=false (or none) is the write itself.
    claimed = alice_client.post("/api/rewards/daily/?dry_run=False", {}, format="json")
    assert claimed.status_code == 201, claimed.content


def test_without_the_dry_run_middleware_the_site_does_not_start(settings):
    from django.core.checks import run_checks

    assert "ledger_core.E011" not in {e.id for e in run_checks()}
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if m != "ledger_core.middleware.DryRunMiddleware"
    ]
    assert "ledger_core.E011" in {e.id for e in run_checks()}


def test_a_write_whose_query_string_cannot_be_read_is_refused(alice_client):
    # Past DATA_UPLOAD_MAX_NUMBER_FIELDS nobody can tell whether it asks for a dry run.
    fund("alice", 3)
    before = LedgerEntry.objects.count()
    many = "&".join(f"k{i}=1" for i in range(1200))
    spend = body(owner_id="alice", operation="CREDIT_SPEND", nonce="many")
    for query in (many, f"{many}&dry_run=true"):
        response = alice_client.post(f"{CONTENT}?{query}", spend, format="json")
        assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in assert_error(response, 400, "invalid")["detail"]
    assert LedgerEntry.objects.count() == before
