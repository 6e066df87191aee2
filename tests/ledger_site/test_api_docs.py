"""The OpenAPI schema and the docs pages: complete, valid, offline."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from drf_spectacular.generators import SchemaGenerator

from tests.livehelpers import ROOT, site_env

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_spectacular_validate_fail_on_warn():
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
         "--file", "/dev/null"],
        cwd=ROOT,
        env=site_env(DJANGO_DEBUG="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_endpoint_is_documented(schema):
    paths = set(schema["paths"])
    for expected in (
        "/api/auth/register/", "/api/auth/token/", "/api/auth/token/refresh/",
        "/api/auth/logout/", "/api/auth/me/",
        "/api/content/ledger/", "/api/content/ledger/{owner_id}/",
        "/api/content/ledger/{owner_id}/entries/", "/api/rewards/ledger/",
        "/api/content/items/", "/api/content/items/{id}/", "/api/content/items/{id}/access/",
        "/api/rewards/daily/", "/api/rewards/referrals/",
    ):  # fmt: skip
        assert expected in paths, expected


def test_list_routes_are_documented_by_their_post_only(schema):
    # A GET of ledger/batch/ or ledger/holds/ is the balance of the owner of
    # that id, documented once as ledger/{owner_id}/.
    for app in ("content", "rewards"):
        for route in ("batch", "holds"):
            assert set(schema["paths"][f"/api/{app}/ledger/{route}/"]) == {"post"}, (app, route)


def test_every_operation_documents_its_errors(schema):
    problems = []
    for path, method, operation in operations(schema):
        codes = set(operation["responses"])
        public = path in {"/api/auth/register/", "/api/auth/token/", "/api/auth/token/refresh/",
                          "/api/auth/logout/", "/api/auth/password/reset/",
                          "/api/auth/password/reset/confirm/",
                          "/api/auth/email/verify/"}  # fmt: skip
        required = {"429"} | (set() if public else {"401"})
        if method in {"post", "put", "patch"}:
            required |= {"400"}
        if path.endswith("{owner_id}/") or path.endswith("entries/"):
            required |= {"403"}
        if "{id}" in path:
            required |= {"404"}
        reads = path.endswith("/ledger/balances/")  # a POST that only reads
        if (
            method == "post"
            and not reads
            and ("/ledger/" in path or path.endswith(("daily/", "referrals/", "items/")))
        ):
            required |= {"403", "409"}
        if not required <= codes:
            problems.append(f"{method.upper()} {path}: missing {sorted(required - codes)}")
        # A ping sends a fixed delivery: that POST has no body.
        body_less = path == "/api/webhooks/{subscription_id}/ping/"
        if "requestBody" not in operation and method == "post" and not body_less:
            problems.append(f"POST {path}: no request body")
    assert problems == []


def test_every_page_size_parameter_states_its_range(schema):
    found = []
    for path, method, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "page_size":
                found.append(path)
                assert parameter["schema"] == {"type": "integer", "minimum": 1}, (path, method)
                assert parameter["description"].startswith("1-"), (path, parameter)
    assert "/api/content/items/" in found and "/api/content/ledger/{owner_id}/entries/" in found


def test_ledger_post_has_examples_and_replay(schema):
    post = schema["paths"]["/api/content/ledger/"]["post"]
    assert {"200", "201", "409"} <= set(post["responses"])
    request = post["requestBody"]["content"]["application/json"]
    assert len(request["examples"]) >= 2
    assert post["responses"]["409"]["content"]["application/json"]["examples"]


def test_jwt_bearer_auth_declared(schema):
    scheme = schema["components"]["securitySchemes"]["jwtAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    me = schema["paths"]["/api/auth/me/"]["get"]
    assert {"jwtAuth": []} in me["security"]
    register = schema["paths"]["/api/auth/register/"]["post"]
    assert (
        register.get("security") in ([], [{}], None) or {"jwtAuth": []} not in register["security"]
    )


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/", "/api/auth/session/login/"])
def test_docs_pages_use_local_assets_only(client, page):
    response = client.get(page, HTTP_HOST="localhost")
    assert response.status_code == 200
    html = response.content.decode()
    # Any http(s) origin named in the page other than the site's own is a
    # request the browser would make elsewhere (fonts, scripts, styles).
    origins = set(re.findall(r"(?:https?:)?//([A-Za-z0-9.-]+\.[A-Za-z]{2,})", html))
    assert origins <= {"localhost"}, origins
    if page != "/api/auth/session/login/":
        assert "/static/drf_spectacular_sidecar/" in html


def test_the_docs_settings_name_no_font_service(client):
    html = client.get("/api/redoc/").content.decode()
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    assert "system-ui" in html


def test_schema_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_the_schemas_errors_are_the_error_shape_in_yaml_too(client):
    """The YAML renderer writes DRF's ErrorDetail as a mapping; errors give plain text."""
    response = client.get("/api/schema/?format=xyz")
    assert response.status_code == 404
    assert yaml.safe_load(response.content) == {"code": "not_found", "detail": "Not found."}
