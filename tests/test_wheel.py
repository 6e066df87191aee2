"""The wheel the Docker image installs carries everything the site needs to
render its pages: built with `pip wheel .` as docker/Dockerfile does, installed
in a fresh virtualenv, and asked for the admin's correcting-entry page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from bench.common import temp_database
from tests.livehelpers import ROOT

pytestmark = pytest.mark.slow

RENDER = r"""
import os, sys
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "ledger_site.settings"
django.setup()
import ledger_core
assert ledger_core.__file__.startswith(sys.prefix), ledger_core.__file__
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567890")
client = Client()
client.force_login(admin)
for url, needle in (
    ("/admin/ledger_core/ledgerentry/post/", b'name="reason"'),
    ("/admin/ledger_core/ledgerentry/", b"Post a correcting entry"),
    ("/", b"Shared Ledger"),
    ("/api/redoc/", b"redoc"),
):
    response = client.get(url, HTTP_HOST="localhost")
    assert response.status_code == 200, (url, response.status_code)
    assert needle in response.content, (url, response.content[:300])
print("rendered")
"""


def test_wheel_ships_templates_and_renders_the_admin_pages(tmp_path):
    # The files docker/Dockerfile copies into its build stage, and nothing else.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("ledger_site", "ledger_core", "content_app", "rewards_app"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("shared_ledger-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "ledger_core/templates/admin/ledger_core/ledgerentry/post.html",
        "ledger_core/templates/admin/ledger_core/ledgerentry/change_list.html",
        "ledger_site/templates/ledger_site/index.html",
        "ledger_site/templates/ledger_site/redoc.html",
    ):
        assert expected in names, expected

    # A fresh virtualenv with the wheel; its dependencies are this suite's own
    # (a path entry, so the project's editable install is not picked up).
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    with temp_database("ledger_wheel") as (url, _dsn):
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": url,
            "DJANGO_SECRET_KEY": "wheel-test-secret-key",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECURE": "0",
            "STATIC_ROOT": str(tmp_path / "static"),
        }
        result = subprocess.run(
            [str(python), "-c", RENDER], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rendered" in result.stdout
