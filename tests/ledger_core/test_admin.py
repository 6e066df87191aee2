"""The admin as an audit tool, through the test client with a superuser."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger_core.models import Balance, LedgerEntry
from tests.conftest import fund
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

ENTRIES = "/admin/ledger_core/ledgerentry/"
BALANCES = "/admin/ledger_core/balance/"


@pytest.fixture
def admin_client(client):
    superuser = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(superuser)
    return client


@pytest.fixture
def entries():
    made = [fund("alice", 5, nonce="a1"), fund("bob", 7, nonce="b1", app="rewards")]
    made.append(fund("alice", 2, nonce="a2"))
    return made


def test_list_shows_entries_and_columns(admin_client, entries):
    response = admin_client.get(ENTRIES)
    assert response.status_code == 200
    html = response.content.decode()
    for header in (
        "Owner id",
        "App",
        "Operation",
        "Amount",
        "Balance after",
        "Nonce",
        "Created by",
    ):
        assert header in html
    assert "a1" in html and "b1" in html
    assert "Post a correcting entry" in html


def test_list_never_counts_or_scans_the_whole_table(admin_client, entries):
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(ENTRIES).status_code == 200
        assert admin_client.get(ENTRIES, {"created_at__year": "2026"}).status_code == 200
    table = LedgerEntry._meta.db_table
    for query in queries.captured_queries:
        sql = query["sql"]
        if table not in sql:
            continue
        assert not re.search(r"MIN\(|MAX\(|DISTINCT", sql), sql
        if "COUNT(" in sql:
            assert "LIMIT" in sql, f"uncapped count: {sql}"


def test_filters(admin_client, entries):
    html = admin_client.get(ENTRIES, {"app": "rewards"}).content.decode()
    assert "b1" in html and ">a1<" not in html
    html = admin_client.get(ENTRIES, {"operation": "SIGNUP_CREDIT"}).content.decode()
    assert ">a1<" not in html
    assert (
        admin_client.get(ENTRIES, {"created_at__gte": "2000-01-01 00:00:00+00:00"}).status_code
        == 200
    )


def test_search_by_owner_and_nonce(admin_client, entries):
    html = admin_client.get(ENTRIES, {"q": "bob"}).content.decode()
    assert ">b1<" in html and ">a1<" not in html
    html = admin_client.get(ENTRIES, {"q": "alice a2"}).content.decode()
    assert ">a2<" in html and ">a1<" not in html


def test_date_hierarchy_drills_down(admin_client, entries):
    year = entries[0].created_at.year
    html = admin_client.get(ENTRIES).content.decode()
    assert f"created_at__year={year}" in html
    html = admin_client.get(ENTRIES, {"created_at__year": year}).content.decode()
    assert "created_at__month=12" in html
    month = entries[0].created_at.month
    html = admin_client.get(
        ENTRIES, {"created_at__year": year, "created_at__month": month}
    ).content.decode()
    assert "created_at__day=1" in html and ">a1<" in html


def test_detail_is_read_only(admin_client, entries):
    url = f"{ENTRIES}{entries[0].pk}/change/"
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert "alice" in html


def test_add_change_delete_are_refused(admin_client, entries):
    pk = entries[0].pk
    assert admin_client.get(f"{ENTRIES}add/").status_code == 403
    assert admin_client.post(f"{ENTRIES}add/", {"owner_id": "x"}).status_code == 403
    response = admin_client.post(f"{ENTRIES}{pk}/change/", {"amount": 1000})
    assert response.status_code == 403
    assert admin_client.get(f"{ENTRIES}{pk}/delete/").status_code == 403
    assert admin_client.post(f"{ENTRIES}{pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(ENTRIES, {"action": "delete_selected", "_selected_action": [pk]})
    assert LedgerEntry.objects.filter(pk=pk).exists()
    assert LedgerEntry.objects.get(pk=pk).amount == 5
    assert admin_client.get(f"{BALANCES}add/").status_code == 403
    assert admin_client.post(f"{BALANCES}alice/change/", {"balance": 999}).status_code == 403
    assert Balance.objects.get(owner_id="alice").balance == 7


def test_csv_export(admin_client, entries):
    response = admin_client.post(
        ENTRIES,
        {"action": "export_csv", "_selected_action": [entries[0].pk, entries[1].pk]},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:7] == ["id", "owner_id", "app", "operation", "amount", "balance_after", "nonce"]
    assert [(r[1], r[2], r[4], r[5], r[6]) for r in rows[1:]] == [
        ("alice", "content", "5", "5", "a1"),
        ("bob", "rewards", "7", "7", "b1"),
    ]


def test_balance_list_links_to_entries(admin_client, entries):
    html = admin_client.get(BALANCES).content.decode()
    assert "owner_id=alice" in html
    response = admin_client.get(ENTRIES, {"owner_id": "alice"})
    assert response.status_code == 200
    page = response.content.decode()
    assert ">a1<" in page and ">b1<" not in page
    assert admin_client.get(f"{BALANCES}alice/change/").status_code == 200


def test_a_balance_page_for_any_owner_id_and_none_for_an_impossible_one(admin_client):
    fund("svc:a@b.c+1_x", 3)
    html = admin_client.get(BALANCES).content.decode()
    link = re.search(r'href="(/admin/ledger_core/balance/[^"]+/change/)"', html).group(1)
    page = admin_client.get(link)
    assert page.status_code == 200 and "svc:a@b.c+1_x" in page.content.decode()
    # No owner id has a NUL byte (PostgreSQL refuses one in text): not found, not a 500.
    response = admin_client.get(f"{BALANCES}%00/change/")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_correcting_entry_goes_through_the_service(admin_client, entries):
    response = admin_client.post(
        f"{ENTRIES}post/",
        {
            "app": "content",
            "owner_id": "alice",
            "operation": "CREDIT_SPEND",
            "amount": "-3",
            "nonce": "fix-1",
            "reason": "refund reversal",
        },
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(nonce="fix-1")
    assert (entry.amount, entry.balance_after) == (-3, 4)
    assert entry.metadata == {"reason": "refund reversal", "via": "admin"}
    assert entry.created_by.endswith(":root")
    assert Balance.objects.get(owner_id="alice").balance == 4
    # The confirmation reaches the next page (messages live in the session).
    page = admin_client.get(response["Location"]).content.decode()
    assert f"Entry #{entry.pk} posted" in page


def test_correcting_entry_rules_apply(admin_client, entries):
    response = admin_client.post(
        f"{ENTRIES}post/",
        {
            "app": "content",
            "owner_id": "alice",
            "operation": "CREDIT_SPEND",
            "amount": "-100",
            "nonce": "too-much",
            "reason": "oops",
        },
    )
    assert response.status_code == 200
    assert "insufficient_balance" in response.content.decode()
    assert not LedgerEntry.objects.filter(nonce="too-much").exists()
    response = admin_client.post(
        f"{ENTRIES}post/",
        {
            "app": "rewards",
            "owner_id": "alice",
            "operation": "REFERRAL_BONUS",
            "nonce": "r",
            "reason": "x",
        },
    )
    assert response.status_code == 200 and "invalid" in response.content.decode()


def test_staff_without_manager_permission_cannot_post(client, entries):
    staff = UserFactory(username="clerk", is_staff=True, perms=["ledger_core.view_ledgerentry"])
    client.force_login(staff)
    assert client.get(ENTRIES).status_code == 200
    assert "Post a correcting entry" not in client.get(ENTRIES).content.decode()
    assert client.get(f"{ENTRIES}post/").status_code == 403
    response = client.post(
        f"{ENTRIES}post/",
        {
            "app": "content",
            "owner_id": "alice",
            "operation": "CREDIT_ADD",
            "amount": "5",
            "nonce": "n",
            "reason": "r",
        },
    )
    assert response.status_code == 403
    assert not LedgerEntry.objects.filter(nonce="n").exists()


def test_usernames_cannot_be_changed_in_the_admin(admin_client):
    from django.contrib.auth import get_user_model

    alice = UserFactory(username="alice")
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert 'name="username"' not in page
    admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/",
        {"username": "mallory", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"},
    )
    assert get_user_model().objects.get(pk=alice.pk).username == "alice"
    assert admin_client.get("/admin/auth/user/add/").status_code == 200


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("cust-42", "This username is taken."),  # has a ledger, no user: its credits
        ("ALICE", "A user with that username already exists."),
        ("batch", "This username is reserved."),
        ("..", "This username is reserved."),
        ("josé", "Use 1-128 characters"),  # Django would take it; no owner id can
    ],
)
def test_a_user_added_in_the_admin_gets_the_rules_of_registration(admin_client, username,
                                                                  message):  # fmt: skip
    from django.contrib.auth import get_user_model

    UserFactory(username="alice")
    fund("cust-42", 40)
    form = {"username": username, "usable_password": "true", "password1": PASSWORD,
            "password2": PASSWORD}  # fmt: skip
    response = admin_client.post("/admin/auth/user/add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not get_user_model().objects.filter(username=username).exists()
    response = admin_client.post("/admin/auth/user/add/", {**form, "username": "dora"})
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="dora").exists()


def test_reverse_from_the_entry_page_goes_through_the_service(admin_client, entries):
    grant = entries[0]  # alice +5, then +2: balance 7
    page = admin_client.get(f"{ENTRIES}{grant.pk}/change/").content.decode()
    assert f'href="{ENTRIES}{grant.pk}/reverse/"' in page and ">Reverse<" in page
    form = admin_client.get(f"{ENTRIES}{grant.pk}/reverse/")
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    # The reason is required.
    refused = admin_client.post(f"{ENTRIES}{grant.pk}/reverse/", {"nonce": "rev-1"})
    assert refused.status_code == 200 and not LedgerEntry.objects.filter(reverses=grant.pk)
    response = admin_client.post(
        f"{ENTRIES}{grant.pk}/reverse/", {"nonce": "rev-1", "reason": "granted twice"}
    )
    assert response.status_code == 302
    reversal = LedgerEntry.objects.get(reverses=grant.pk)
    assert (reversal.operation, reversal.amount, reversal.balance_after) == ("REVERSAL", -5, 2)
    assert reversal.metadata == {"reason": "granted twice"}
    assert reversal.created_by.endswith(":root")
    page = admin_client.get(response["Location"]).content.decode()
    assert f"Entry #{grant.pk} reversed by #{reversal.pk}" in page
    # The reversed entry's page now links its reversal; reversing again is refused.
    page = admin_client.get(f"{ENTRIES}{grant.pk}/change/").content.decode()
    assert "reversed by" in page
    again = admin_client.post(
        f"{ENTRIES}{grant.pk}/reverse/", {"nonce": "rev-2", "reason": "again"}
    ).content.decode()
    assert "already_reversed" in again
    assert LedgerEntry.objects.filter(reverses=grant.pk).count() == 1


def test_staff_without_manager_permission_cannot_reverse(client, entries):
    staff = UserFactory(username="clerk", is_staff=True, perms=["ledger_core.view_ledgerentry"])
    client.force_login(staff)
    url = f"{ENTRIES}{entries[0].pk}/reverse/"
    assert client.get(url).status_code == 403
    assert client.post(url, {"nonce": "x", "reason": "y"}).status_code == 403
    assert not LedgerEntry.objects.filter(operation="REVERSAL").exists()


HOLDS = "/admin/ledger_core/ledgerhold/"


def _hold(nonce: str, amount: int = -3):
    from ledger_core.actors import Actor
    from ledger_core.services import hold_place

    return hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce=nonce, app="content",
                      actor=Actor.system(), amount=amount).hold  # fmt: skip


def test_holds_list_and_balance_page_show_what_is_held(admin_client, entries):
    hold = _hold("h1")
    page = admin_client.get(HOLDS).content.decode()
    assert f"{HOLDS}{hold.pk}/change/" in page and "pending" in page
    assert (
        admin_client.get(f"{HOLDS}?status__exact=captured")
        .content.decode()
        .count(f"{HOLDS}{hold.pk}/change/")
        == 0
    )
    balances = admin_client.get(BALANCES).content.decode()
    assert f"{HOLDS}?owner_id=alice" in balances
    owner_holds = admin_client.get(f"{HOLDS}?owner_id=alice").content.decode()
    assert f"{HOLDS}{hold.pk}/change/" in owner_holds
    assert admin_client.post(f"{HOLDS}{hold.pk}/change/", {"status": "voided"}).status_code == 403


def test_capture_and_void_from_the_hold_page_go_through_the_services(admin_client, entries):
    from ledger_core.models import LedgerHold

    first, second = _hold("h1"), _hold("h2", amount=-2)
    page = admin_client.get(f"{HOLDS}{first.pk}/change/").content.decode()
    assert f'href="{HOLDS}{first.pk}/capture/"' in page and ">Capture<" in page
    assert f'href="{HOLDS}{first.pk}/void/"' in page
    form = admin_client.get(f"{HOLDS}{first.pk}/capture/")
    assert form.status_code == 200 and 'name="amount"' in form.content.decode()
    too_much = admin_client.post(f"{HOLDS}{first.pk}/capture/", {"amount": "-4"})
    assert "invalid" in too_much.content.decode()
    response = admin_client.post(f"{HOLDS}{first.pk}/capture/", {"amount": "-1"})
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(hold=first.pk)
    assert (entry.amount, entry.balance_after) == (-1, 6)
    assert (
        f"Hold #{first.pk} captured by entry #{entry.pk}"
        in admin_client.get(response["Location"]).content.decode()
    )
    response = admin_client.post(f"{HOLDS}{second.pk}/void/", {"reason": "job failed"})
    assert response.status_code == 302
    assert LedgerHold.objects.get(pk=second.pk).status == "voided"
    again = admin_client.post(f"{HOLDS}{first.pk}/void/", {}).content.decode()
    assert "hold_not_pending" in again
    assert Balance.objects.get(owner_id="alice").held == 0


def test_staff_without_manager_permission_cannot_resolve_holds(client, entries):
    hold = _hold("h1")
    staff = UserFactory(username="clerk", is_staff=True, perms=["ledger_core.view_ledgerhold"])
    client.force_login(staff)
    assert client.get(f"{HOLDS}{hold.pk}/change/").status_code == 200
    assert client.post(f"{HOLDS}{hold.pk}/capture/", {}).status_code == 403
    assert client.post(f"{HOLDS}{hold.pk}/void/", {}).status_code == 403
    assert Balance.objects.get(owner_id="alice").held == 3


def test_balance_page_shows_lots_and_the_entry_list_filters_expiries(admin_client, entries):
    import time
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from ledger_core.actors import Actor
    from ledger_core.services import entry_post

    def grant(nonce, amount, expires_at):
        return entry_post(
            owner_id="alice", operation="CREDIT_ADD", nonce=nonce, app="content",
            actor=Actor.system(), amount=amount, expires_at=expires_at,
        ).entry  # fmt: skip

    lot = grant("lot-1", 4, timezone.now() + timedelta(days=3))
    grant("lot-2", 2, timezone.now() + timedelta(seconds=0.5))
    time.sleep(0.6)
    call_command("expire_credits", "--no-progress", stdout=io.StringIO())
    page = admin_client.get(f"{BALANCES}alice/change/").content.decode()
    assert f"<td>#{lot.pk}</td><td>4</td><td>4</td>" in page
    assert "/admin/ledger_core/creditlot/?owner_id=alice" in page
    lots_page = admin_client.get("/admin/ledger_core/creditlot/?owner_id=alice").content.decode()
    assert f"/admin/ledger_core/ledgerentry/{lot.pk}/change/" in lots_page
    expiries = admin_client.get(f"{ENTRIES}?operation=CREDIT_EXPIRY").content.decode()
    expiry = LedgerEntry.objects.get(operation="CREDIT_EXPIRY")
    assert f"{ENTRIES}{expiry.pk}/change/" in expiries
    assert f"{ENTRIES}{lot.pk}/change/" not in expiries


WEBHOOKS = "/admin/ledger_core/webhooksubscription/"


def test_webhook_destinations_are_checked_in_the_admin_forms(admin_client):
    from ledger_core.models import WebhookSubscription

    assert admin_client.get(WEBHOOKS + "add/").status_code == 200
    form = {"url": "http://10.0.0.5/hook", "event_types": "[]", "app": "", "active": "on"}
    response = admin_client.post(WEBHOOKS + "add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "not a public address" in response.content.decode()
    assert not WebhookSubscription.objects.exists()
    response = admin_client.post(WEBHOOKS + "add/", {**form, "url": "https://hooks.example.com/x"})
    assert response.status_code == 302, response.content.decode()[:2000]
    subscription = WebhookSubscription.objects.get()
    assert subscription.url == "https://hooks.example.com/x" and len(subscription.secret) == 64
    change = f"{WEBHOOKS}{subscription.pk}/change/"
    assert admin_client.get(change).status_code == 200
    response = admin_client.post(change, {**form, "url": "http://localhost:9000/"})
    assert response.status_code == 200
    assert "not a public address" in response.content.decode()
    subscription.refresh_from_db()
    assert subscription.url == "https://hooks.example.com/x"
    # The app, too, must be a registered one (on adding and on changing).
    response = admin_client.post(change, {**form, "url": subscription.url, "app": "contnet"})
    assert response.status_code == 200
    assert "Unknown app" in response.content.decode()
    response = admin_client.post(WEBHOOKS + "add/", {**form, "url": subscription.url,
                                                     "app": "contnet"})  # fmt: skip
    assert response.status_code == 200 and "Unknown app" in response.content.decode()
    assert WebhookSubscription.objects.count() == 1
    subscription.refresh_from_db()
    assert subscription.app == ""


@pytest.mark.parametrize(
    "changelist",
    [
        "ledger_core/ledgerentry/?owner_id=a%00b", "ledger_core/ledgerentry/?app=a%00b",
        "ledger_core/ledgerentry/?operation=a%00b", "ledger_core/ledgerentry/?nonce=a%00b",
        "ledger_core/ledgerhold/?owner_id=a%00b", "ledger_core/balance/?owner_id=a%00b",
        "ledger_core/creditlot/?owner_id=a%00b", "ledger_core/webhooksubscription/?url=a%00b",
        "auth/user/?username=a%00b", "content/contentitem/?title=a%00b",
        "auth/group/?name=a%00b", "token_blacklist/outstandingtoken/?jti=a%00b",
        "token_blacklist/blacklistedtoken/?q=a%00b",
        "rewards/referral/?created_by=a%00b",
    ],
)  # fmt: skip
def test_a_nul_in_a_changelist_lookup_is_an_incorrect_lookup_not_a_500(admin_client, changelist):
    fund("alice", 1)
    path = f"/admin/{changelist.split('?')[0]}"
    response = admin_client.get(f"/admin/{changelist}")
    assert (response.status_code, response["Location"]) == (302, f"{path}?e=1")
    assert admin_client.get(f"/admin/{changelist}".replace("%00", "")).status_code == 200


def test_every_model_admin_of_the_site_has_nul_safe_changelists():
    from django.apps import apps
    from django.contrib import admin

    from ledger_core.admin import SafeLookupsMixin

    registered = [m for m in apps.get_models() if admin.site.is_registered(m)]
    assert len(registered) >= 10
    unsafe = [m._meta.label for m in registered
              if not isinstance(admin.site.get_model_admin(m), SafeLookupsMixin)]  # fmt: skip
    assert unsafe == []
