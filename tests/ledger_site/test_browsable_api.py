"""The browsable API, as a person meets it in a browser: every GET route of the
API renders as an HTML page, and the post forms offer what they should."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from content_app.services import item_create
from ledger_core.actors import Actor
from ledger_core.operations import registry
from ledger_core.services import hold_place
from ledger_core.webhooks import subscription_create
from tests.conftest import fund

pytestmark = pytest.mark.django_db

# Values for the URL parameters of API routes; a route with any other
# parameter fails the test until it is given one here.
PARAMETERS = {"owner_id": "alice", "pk": None, "format": None, "hold_id": None,
              "subscription_id": None, "entry_id": None}  # fmt: skip


def _routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def api_get_routes() -> list[str]:
    routes = []
    for route, pattern in _routes(get_resolver().url_patterns):
        # The schema is a YAML/JSON document; /api/docs/ and /api/redoc/ are its pages.
        if not route.startswith("api/") or "format" in route or route == "api/schema/":
            continue
        view = pattern.callback
        actions = getattr(view, "actions", None)
        view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
        allows_get = (
            "get" in actions
            if actions
            else hasattr(view_class, "get") and "get" in view_class.http_method_names
        )
        if allows_get:
            routes.append(route)
    return routes


def concrete(
    route: str, item_pk: int, hold_id: int, subscription_id: int = 0, entry_id: int = 0
) -> str:
    path = route.replace("^", "").replace("$", "").replace("\\.", ".")

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in PARAMETERS, f"no test value for URL parameter {name!r} in {route}"
        given = {
            "pk": item_pk, "hold_id": hold_id, "subscription_id": subscription_id,
            "entry_id": entry_id,
        }  # fmt: skip
        return str(given[name]) if name in given else PARAMETERS[name]

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)|<(?:\w+:)?(\w+)>", value, path)
    return "/" + path


@pytest.fixture
def browser(manager):
    fund("alice", 10)
    client = Client()
    client.force_login(manager)
    return client


def test_every_api_get_route_renders_as_html(browser, user):
    entry = fund("alice", 10, nonce="for-an-item")
    item = item_create(
        owner=user, title="t", body="b", nonce="item-1", actor=Actor.for_user(user)
    ).item
    holds = {
        app: hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce=f"h-{app}", app=app,
                        actor=Actor.system()).hold.pk
        for app in ("content", "rewards")
    }  # fmt: skip
    subscription = subscription_create(url="https://example.test/h", actor=Actor.system())
    routes = api_get_routes()
    assert len(routes) >= 8, routes
    for route in routes:
        hold_id = holds["rewards" if "rewards" in route else "content"]
        url = concrete(route, item.pk, hold_id, subscription.pk, entry.pk)
        if url == "/api/content/items/" + str(item.pk) + "/":
            continue  # another user's item is a 404 by design; rendered below as its owner
        response = browser.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, (url, response.status_code, response.content[:500])
        assert response["Content-Type"].startswith("text/html"), url
        assert b"<html" in response.content.lower(), url
    owner = Client()
    owner.force_login(user)
    response = owner.get(f"/api/content/items/{item.pk}/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"<html" in response.content.lower()


def test_history_renders_with_format_api_too(browser):
    for app in ("content", "rewards"):
        response = browser.get(f"/api/{app}/ledger/alice/entries/?format=api")
        assert response.status_code == 200, response.content[:500]
        assert b"CREDIT_ADD" in response.content


def test_post_form_offers_the_apps_operations_and_blank_metadata(browser):
    for app in ("content", "rewards"):
        # The post form lives on the page of the post URL (GET there is not allowed).
        page = browser.get(f"/api/{app}/ledger/", HTTP_ACCEPT="text/html").content.decode()
        form = page[page.index('name="operation"') - 200 :]
        select = form[: form.index("</select>")]
        offered = re.findall(r'<option value="([A-Z_]+)"', select)
        assert offered == registry.postable(app, direct=True), (app, offered)
        metadata = re.search(r'<textarea name="metadata"[^>]*>(.*?)</textarea>', page, re.S)
        assert metadata is not None and metadata.group(1).strip() == "", app


def test_html_form_post_with_blank_metadata(browser):
    response = browser.post(
        "/api/content/ledger/",
        {"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "form-1", "amount": "2",
         "metadata": ""},
        HTTP_ACCEPT="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] is None


def test_hold_forms_offer_holdable_operations_and_capture_amount(browser):
    for app in ("content", "rewards"):
        page = browser.get(f"/api/{app}/ledger/holds/", HTTP_ACCEPT="text/html").content.decode()
        form = page[page.index('name="operation"') - 200 :]
        offered = re.findall(r'<option value="([A-Z_]+)"', form[: form.index("</select>")])
        expected = ["CREDIT_SPEND", "CONTENT_CREATION"] if app == "content" else ["CREDIT_SPEND"]
        assert offered == expected, (app, offered)
        assert 'name="expires_in"' in page
    hold = hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce="form", app="content",
                      actor=Actor.system()).hold  # fmt: skip
    page = browser.get(f"/api/content/ledger/holds/{hold.pk}/capture/", HTTP_ACCEPT="text/html")
    assert 'name="amount"' in page.content.decode()
    page = browser.get(f"/api/content/ledger/holds/{hold.pk}/void/", HTTP_ACCEPT="text/html")
    assert 'name="reason"' in page.content.decode()
