"""docs/design.md's "Adding a consumer app", done as written: the test builds
``shop_app`` from the doc's code blocks, adds it to the site as step 5 says,
and uses it the way a client would (register, post, read, list, schema)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import PASSWORD
from tests.livehelpers import ROOT, manage, site_env, temp_database

pytestmark = pytest.mark.slow

SECTION = "## Adding a consumer app"
# A step naming a file of the app, then (before the next step) its code block.
STEP_FILE = re.compile(
    r"^\d+\. `shop_app/(?P<name>\w+\.py)`.*?```python\n(?P<code>.*?)```", re.M | re.S
)

# Step 5, the site's two lines, as a settings and a URL module beside the site's.
SETTINGS = """\
from ledger_site.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "shop_app"]  # noqa: F405
ROOT_URLCONF = "shop_site_urls"
"""
URLS = """\
from django.urls import include, path

from ledger_site.urls import handler400, handler404  # noqa: F401
from ledger_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [*site_urlpatterns, path("api/shop/", include("shop_app.urls"))]
"""

# What a client sees, gathered by Django's test client in the site's process.
CLIENT = """\
import json
from django.test import Client

c = Client()
seen = {}
r = c.post("/api/auth/register/", {"username": "alice", "password": PASSWORD},
           content_type="application/json")
seen["register"] = r.status_code
r = c.post("/api/auth/token/", {"username": "alice", "password": PASSWORD},
           content_type="application/json")
auth = {"HTTP_AUTHORIZATION": "Bearer " + r.json()["access"]}
r = c.post("/api/shop/ledger/", {"owner_id": "alice", "operation": "SHOP_PURCHASE",
           "nonce": "buy-1"}, content_type="application/json", **auth)
seen["purchase"] = [r.status_code, r.json()]
r = c.post("/api/shop/ledger/", {"owner_id": "alice", "operation": "CONTENT_CREATION",
           "nonce": "buy-2"}, content_type="application/json", **auth)
seen["foreign"] = [r.status_code, r.json()]
seen["balance"] = c.get("/api/shop/ledger/alice/", **auth).json()
seen["history"] = c.get("/api/shop/ledger/alice/entries/", **auth).json()
seen["root"] = c.get("/api/", HTTP_ACCEPT="application/json").json()
seen["landing"] = c.get("/").content.decode()
schema = c.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
seen["schema_paths"] = sorted(p for p in schema["paths"] if p.startswith("/api/shop/"))
def enums(node):
    if isinstance(node, dict):
        yield from node.get("enum", [])
        for value in node.values():
            yield from enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from enums(value)
seen["schema_enums"] = sorted(
    {v for v in enums(schema) if isinstance(v, str) and v.startswith("SHOP_")}
)
print("SEEN " + json.dumps(seen))
"""


def doc_files() -> dict[str, str]:
    text = (ROOT / "docs" / "design.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return {
        m["name"]: re.sub(r"^   ", "", m["code"], flags=re.M) for m in STEP_FILE.finditer(section)
    }


def test_the_doc_gives_every_file_of_the_app():
    assert sorted(doc_files()) == ["api.py", "apps.py", "operations.py", "urls.py"]


def test_a_third_app_built_from_the_doc_serves_its_ledger(tmp_path: Path):
    app = tmp_path / "shop_app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    for name, code in doc_files().items():
        (app / name).write_text(code)
    (tmp_path / "shop_site_settings.py").write_text(SETTINGS)
    (tmp_path / "shop_site_urls.py").write_text(URLS)
    with temp_database() as database_url:
        env = site_env(
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="shop_site_settings",
            PYTHONPATH=f"{tmp_path}:{ROOT}",
            DJANGO_ALLOWED_HOSTS="testserver",
            RATELIMIT_ENABLE="0",
        )
        checked = manage(env, "check")
        assert "System check identified no issues" in checked.stdout, checked
        manage(env, "migrate", "--noinput")
        result = subprocess.run(  # noqa: S603 (our own command line)
            [sys.executable, "manage.py", "shell", "-c", f"PASSWORD = {PASSWORD!r}\n{CLIENT}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        # The operator's tools know the app too (an unknown --app is refused).
        granted = manage(env, "grant_credits", "--owner", "alice", "--amount", "10",
                         "--nonce", "grant-1", "--app", "shop", "--no-progress")  # fmt: skip
        verified = manage(env, "verify_ledger", "--owner", "alice")
    assert granted.stdout.startswith("granted 1 entry (+10 credits)"), granted.stdout
    assert "3 entries" in verified.stdout and "ledger consistent" in verified.stdout, verified
    seen = json.loads(result.stdout.split("SEEN ", 1)[1])

    assert seen["register"] == 201
    status, entry = seen["purchase"]
    assert status == 201, entry
    assert (entry["app"], entry["operation"], entry["amount"]) == ("shop", "SHOP_PURCHASE", -2)
    assert entry["balance_after"] == 1  # the signup credit's 3, less 2
    status, refused = seen["foreign"]
    assert status == 400 and refused["code"] == "invalid", refused
    assert "SHOP_PURCHASE" in refused["allowed"] and "CONTENT_CREATION" not in refused["allowed"]
    assert seen["balance"]["balance"] == 1
    history = [e["operation"] for e in seen["history"]["results"]]
    assert history == ["SHOP_PURCHASE", "SIGNUP_CREDIT"]  # every app's, newest first
    assert seen["root"]["shop"]["post"] == "http://testserver/api/shop/ledger/"
    assert "/api/shop/ledger/" in seen["landing"]
    assert "/api/shop/ledger/" in seen["schema_paths"], seen["schema_paths"]
    assert "/api/shop/ledger/{owner_id}/entries/" in seen["schema_paths"]
    assert seen["schema_enums"] == ["SHOP_PURCHASE"]
