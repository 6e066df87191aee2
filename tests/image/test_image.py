"""`make image-test`: the runtime image of docker/Dockerfile, built with podman
and run the way this machine allows.

Containers cannot start here (the sandbox refuses `setrlimit`), so the built
image's root filesystem is mounted (`podman create` + `podman mount`) and its
entrypoint runs under `chroot` as the image's user, with the image's own
environment and working directory, on the host's network, PostgreSQL and
Redis. What is checked is what a deployer relies on: migrations and the
superuser command, register/token/post, every admin page the project adds,
static files from the image, /metrics and /readyz, a non-root process, and the
image's HEALTHCHECK command.

Not covered: compose networking between containers (no engine here).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import free_port, temp_database
from tests.livehelpers import ROOT, call, wait_for

pytestmark = [pytest.mark.image, pytest.mark.slow]

TAG = "localhost/shared-ledger:test"
ADMIN_USER, ADMIN_PASSWORD = "image-admin", "image-admin-passphrase-7"


def podman(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image() -> dict:
    # Docker format: OCI images have no HEALTHCHECK (podman would drop it).
    podman("build", "--isolation", "chroot", "--format", "docker", "--target", "runtime", "-t", TAG,
           "-f", str(ROOT / "docker" / "Dockerfile"), str(ROOT), timeout=1200)  # fmt: skip
    inspected = json.loads(podman("image", "inspect", TAG))[0]
    # podman shows the HEALTHCHECK beside the config; Docker inside it.
    return {**inspected["Config"], "Healthcheck": inspected.get("Healthcheck")
            or inspected["Config"].get("Healthcheck")}  # fmt: skip


@contextlib.contextmanager
def image_root() -> Iterator[Path]:
    container = podman("create", TAG)
    mounted: list[Path] = []
    try:
        root = Path(podman("mount", container))
        for name in ("dev", "proc"):
            target = root / name
            subprocess.run(["mount", "--bind", f"/{name}", str(target)], check=True)
            mounted.append(target)
        yield root
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)
        subprocess.run(["podman", "umount", container], capture_output=True, check=False)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, check=False)


def in_image(root: Path, config: dict, env: dict[str, str], *command: str, **kwargs):
    """Run ``command`` in the image's filesystem as the image's user, with its
    environment (plus ``env``) in its working directory."""
    user = config.get("User") or "0"
    variables = [*config.get("Env", []), *(f"{k}={v}" for k, v in env.items())]
    workdir = config.get("WorkingDir") or "/"
    script = f'cd {workdir} && exec "$@"'
    argv = ["chroot", f"--userspec={user}", str(root), "/usr/bin/env", "-i", *variables,
            "/bin/sh", "-c", script, "sh", *command]  # fmt: skip
    if kwargs.pop("background", False):
        return subprocess.Popen(argv, text=True, **kwargs)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def session_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def get(opener, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def admin_login(opener, base: str) -> None:
    status, page = get(opener, f"{base}/admin/login/")
    assert status == 200, page[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": ADMIN_PASSWORD,
            "next": "/admin/"}  # fmt: skip
    data = urllib.parse.urlencode(form).encode()
    with opener.open(urllib.request.Request(f"{base}/admin/login/", data=data), timeout=10) as r:
        assert r.status == 200 and r.url.endswith("/admin/"), r.url


def test_runtime_image_serves_what_a_deployer_relies_on(image):
    # Not the default port: the HEALTHCHECK must follow GUNICORN_BIND.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with temp_database("ledger_image") as (database_url, _dsn), image_root() as root:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": "redis://127.0.0.1:6379/5",
            "DJANGO_SECRET_KEY": "image-test-secret-key-with-some-length-0123456789",
            "DJANGO_SECURE": "0",  # plain HTTP on loopback
            # The public name first, as a deployment would: the HEALTHCHECK
            # must still be answered 200.
            "DJANGO_ALLOWED_HOSTS": "ledger.example.com,127.0.0.1,localhost",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "DJANGO_SUPERUSER_USERNAME": ADMIN_USER,
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        }
        server = in_image(root, image, env, "docker/entrypoint.sh", background=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            try:
                wait_for(f"{base}/healthz", timeout=120)
            except TimeoutError:
                server.kill()
                raise AssertionError(server.communicate(timeout=10)[0][-5000:]) from None
            check_the_running_image(root, image, env, base, server.pid)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def check_the_running_image(root: Path, config: dict, env: dict, base: str, pid: int) -> None:
    # The entrypoint migrated; the superuser command works.
    check = in_image(root, config, env, "python", "manage.py", "migrate", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    made = in_image(root, config, env, "python", "manage.py", "createsuperuser", "--noinput")
    assert made.returncode == 0, made.stdout + made.stderr

    # gunicorn runs as the image's non-root user.
    status = Path(f"/proc/{pid}/status").read_text()
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert uid != "0" and uid == (config.get("User") or "0").split(":")[0], status

    # Register, log in, post.
    user = {"username": "image-user", "password": "correct-Horse-battery-9"}
    status_code, body, _ = call("POST", f"{base}/api/auth/register/", user)
    assert (status_code, body.get("balance")) == (201, 3), body
    _, tokens, _ = call("POST", f"{base}/api/auth/token/", user)
    spend = {"owner_id": "image-user", "operation": "CREDIT_SPEND", "nonce": "image-1"}
    status_code, entry, _ = call("POST", f"{base}/api/content/ledger/", spend, tokens["access"])
    assert (status_code, entry.get("balance_after")) == (201, 2), entry

    # Every admin page the project adds renders: the correcting-entry and the
    # reversal forms included.
    opener = session_opener()
    admin_login(opener, base)
    pages = {
        "/admin/": "Site administration",
        "/admin/ledger_core/ledgerentry/": "Post a correcting entry",
        "/admin/ledger_core/ledgerentry/post/": 'name="reason"',
        "/admin/ledger_core/balance/": "image-user",
        "/admin/content/contentitem/": "content item",
        "/admin/rewards/referral/": "referral",
        f"/admin/ledger_core/ledgerentry/{entry['id']}/change/": ">Reverse<",
        f"/admin/ledger_core/ledgerentry/{entry['id']}/reverse/": "Reverse entry",
    }
    for path, needle in pages.items():
        status_code, page = get(opener, base + path)
        assert status_code == 200 and needle.lower() in page.lower(), (path, page[:500])

    # Static files come from the image (admin CSS, Swagger UI, ReDoc).
    assets: set[str] = set()
    for path in ("/admin/login/", "/api/docs/", "/api/redoc/"):
        status_code, page = get(session_opener(), base + path)
        assert status_code == 200, path
        assets |= set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page))
    assert any("admin/css" in a for a in assets) and any("swagger" in a for a in assets)
    assert any("redoc" in a for a in assets), assets
    for asset in assets:
        assert get(session_opener(), base + asset)[0] == 200, asset

    # Probes and metrics.
    status_code, metrics = get(session_opener(), f"{base}/metrics")
    assert status_code == 200 and "django_http_requests" in metrics
    status_code, ready = get(session_opener(), f"{base}/readyz")
    assert status_code == 200 and json.loads(ready)["checks"]["database"] == "ok"

    # The image's own HEALTHCHECK command succeeds.
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    health = in_image(root, config, env, *test[1:])
    assert health.returncode == 0, health.stdout + health.stderr
