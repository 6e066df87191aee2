"""schemathesis against a live server, as a manager and as an owner: no 5xx
and every response conforms to the schema. Bounded in examples and time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import service_account_password
from tests.factories import PASSWORD
from tests.livehelpers import (
    call,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
    temp_database,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = "12"
FUZZ_TIMEOUT = 420  # seconds per run; a run takes about 2-3 minutes here


def schemathesis(base: str, token: str, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base}/api/schema/",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            "--request-timeout",
            "10",
            "--seed",
            "20261126",
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT,
    )


def test_fuzz_as_manager_and_owner(tmp_path):
    with temp_database() as database_url:
        env = gunicorn_env(
            tmp_path,
            DATABASE_URL=database_url,
            RATELIMIT_ENABLE="0",
            LOG_LEVEL="WARNING",
            CACHE_KEY_PREFIX=f"ledger-fuzz-{free_port()}",
            # Long polls answer within a second here (the fuzzer asks for up to 30).
            LEDGER_EVENTS_MAX_WAIT="1",
            # Password reset mail is sent (to nowhere), as on a configured site.
            EMAIL_URL="dummymail://",
        )
        manage(env, "migrate", "--noinput")
        out = manage(env, "create_service_account", "fuzz-manager").stdout
        manager_password = service_account_password(out)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with running_server(gunicorn_cmd(port, 2), env, f"{base}/healthz", tmp_path / "server.log"):
            status, _, _ = call(
                "POST",
                f"{base}/api/auth/register/",
                {"username": "fuzz-owner", "password": PASSWORD},
            )
            assert status == 201
            tokens = {}
            for name, password in (("fuzz-manager", manager_password), ("fuzz-owner", PASSWORD)):
                status, body, _ = call(
                    "POST", f"{base}/api/auth/token/", {"username": name, "password": password}
                )
                assert status == 200, body
                tokens[name] = body["access"]
            failures = []
            for name, token in tokens.items():
                result = schemathesis(base, token, tmp_path / f"{name}.txt")
                if result.returncode != 0:
                    failures.append(
                        f"--- as {name} ---\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
                    )
        assert not failures, (
            "\n".join(failures) + "\n" + (tmp_path / "server.log").read_text()[-4000:]
        )
