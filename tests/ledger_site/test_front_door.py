"""The front door: a landing page at /, the API root at /api/, JSON 404s under /api/."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_landing_page_links_everywhere(client):
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for href in ("/api/", "/api/docs/", "/api/redoc/", "/admin/", "/api/auth/session/login/"):
        assert f'href="{href}' in html, href
    assert client.get("/admin/", follow=True).status_code == 200


def test_admin_view_site_leads_to_the_landing_page(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert 'href="/"' in html


def test_api_root_lists_every_app(api_client):
    response = api_client.get("/api/")
    assert response.status_code == 200
    body = response.json()
    assert body["content"]["post"] == "http://testserver/api/content/ledger/"
    assert body["rewards"]["entries"] == "http://testserver/api/rewards/ledger/OWNER/entries/"
    assert body["auth"]["token"] == "http://testserver/api/auth/token/"
    assert body["auth"]["password_reset"] == "http://testserver/api/auth/password/reset/"
    assert body["content"]["items"].endswith("/api/content/items/")
    assert body["content"]["holds"] == "http://testserver/api/content/ledger/holds/"
    assert body["rewards"]["balances"] == "http://testserver/api/rewards/ledger/balances/"
    assert body["rewards"]["owner_holds"].endswith("/api/rewards/ledger/OWNER/holds/")
    assert body["events"] == {
        "feed": "http://testserver/api/events/",
        "webhooks": "http://testserver/api/webhooks/",
    }
    assert "site" not in body  # registered (registration credits), but without endpoints
    html = api_client.get("/api/", HTTP_ACCEPT="text/html")
    assert html.status_code == 200 and b"/api/content/ledger/" in html.content


@pytest.mark.parametrize(
    "path", ["/api/nothing/", "/api/content/nothing/", "/api/content/ledger/a/b/c/"]
)
def test_unknown_api_routes_are_json_404(api_client, path):
    response = api_client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_unknown_page_outside_the_api_stays_html(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/api/content/ledger/alice/", "/api/auth/token/"])
def test_bad_host_is_json_400_under_the_api(client, path):
    response = client.get(path, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    html = client.get("/", HTTP_HOST="evil.example")
    assert html.status_code == 400 and html["Content-Type"].startswith("text/html")
