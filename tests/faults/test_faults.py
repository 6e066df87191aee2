"""`make faults`: the ledger under real faults, with clients that retry every
ambiguous answer with its nonce. After each scenario PostgreSQL must hold every
acknowledged entry exactly once and nothing else, no balance may have gone
negative, balances must equal their entries and the credits moved, and no
balance read made after an acknowledged post may show an older version.

Bounded: each scenario loads for a few seconds with a handful of client
threads on loopback; the whole suite takes a few minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.common import service_account_password
from tests.faults.harness import (
    Ledger,
    PostgresCluster,
    RedisServer,
    bank_client,
    check,
    worker_pids,
)
from tests.livehelpers import (
    ROOT,
    call,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLIENTS = 8
LOAD_SECONDS = 7.0
FAULT_AT = 1.5
WORKERS = 3
FUNDING = 20  # credits per owner before the load


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    cluster = PostgresCluster()
    redis = RedisServer(tmp)
    cluster.create()
    redis.start()
    try:
        yield cluster, redis, tmp
    finally:
        redis.kill()
        cluster.drop()


@pytest.fixture(scope="module")
def site(servers):
    cluster, redis, tmp = servers
    env = gunicorn_env(
        tmp,
        DATABASE_URL=cluster.url,
        REDIS_URL=redis.url,
        RATE_LIMIT_LEDGER_WRITE="100000/m",
        RATE_LIMIT_LEDGER_READ="100000/m",
        RATE_LIMIT_AUTH="100000/m",
        LOG_LEVEL="WARNING",
    )
    manage(env, "migrate", "--noinput")
    password = service_account_password(manage(env, "create_service_account", "bank").stdout)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(gunicorn_cmd(port, WORKERS), env, f"{base}/healthz") as server:
        _, tokens, _ = call(
            "POST", f"{base}/api/auth/token/", {"username": "bank", "password": password}
        )
        yield base, tokens["access"], server, env


def run_scenario(site, servers, name: str, fault, recover=None, recover_at: float = 4.0) -> dict:
    base, token, server, env = site
    cluster, redis, _ = servers
    owners = [f"{name}-{i}" for i in range(6)]
    for owner in owners:
        body = {"owner_id": owner, "operation": "CREDIT_ADD", "nonce": f"fund-{owner}",
                "amount": FUNDING}  # fmt: skip
        assert call("POST", f"{base}/api/content/ledger/", body, token)[0] == 201
    ledger = Ledger()
    until = time.monotonic() + LOAD_SECONDS
    threads = [
        threading.Thread(
            target=bank_client,
            args=(base, token, owners, ledger),
            kwargs={"name": f"{name}-c{i}", "until": until},
        )  # fmt: skip
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(FAULT_AT)
    fault()
    if recover is not None:
        time.sleep(max(0.0, recover_at - FAULT_AT))
        recover()
    for thread in threads:
        thread.join(LOAD_SECONDS + 120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(ledger.acknowledged) > 20, "the load did not get going"
    result = check(cluster.dsn(), ledger, owners, funded=FUNDING * len(owners))
    result["acknowledged"] = len(ledger.acknowledged)
    result["reads"] = len(ledger.reads)
    result["retries"] = ledger.retries
    report = manage(env, "verify_ledger", "--no-progress").stdout
    result["verify_ledger_clean"] = int("ledger consistent" in report)
    print(f"{name}: {result}")  # shown with -s / -rA: what each scenario did
    return result


def assert_clean(result: dict) -> None:
    counts = ("acknowledged", "reads", "retries", "verify_ledger_clean")
    bad = {k: v for k, v in result.items() if k not in counts and v}
    assert not bad and result["verify_ledger_clean"], result


def test_worker_killed(site, servers):
    _, _, server, _ = site

    def kill_a_worker() -> None:
        os.kill(worker_pids(server.pid)[0], signal.SIGKILL)

    assert_clean(run_scenario(site, servers, "wkill", kill_a_worker))


def test_gunicorn_reloaded(site, servers):
    _, _, server, _ = site
    assert_clean(run_scenario(site, servers, "hup", lambda: os.kill(server.pid, signal.SIGHUP)))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarted(site, servers, mode):
    cluster = servers[0]
    assert_clean(run_scenario(site, servers, f"pg{mode}", lambda: cluster.restart(mode)))


def test_postgresql_stopped_for_a_while(site, servers):
    cluster = servers[0]
    # Down for 8 s: longer than the load; clients keep retrying what is in flight.
    assert_clean(run_scenario(site, servers, "pgstop", cluster.stop, cluster.start, 9.5))


@pytest.mark.parametrize("seconds", [5, 12])
def test_postgresql_frozen(site, servers, seconds):
    cluster = servers[0]
    # SIGSTOP: requests wait on a server that accepts connections and never
    # answers. 12 s outlasts the clients' 10 s timeout: they retry a post that
    # is still in flight in a frozen backend and commits when it thaws.
    result = run_scenario(site, servers, f"pgfreeze{seconds}", cluster.freeze, cluster.thaw,
                          FAULT_AT + seconds)  # fmt: skip
    assert_clean(result)
    if seconds > 10:
        assert result["retries"] > 0, "no client timed out and retried during the freeze"


def test_redis_killed_and_restarted(site, servers):
    redis = servers[1]
    assert_clean(run_scenario(site, servers, "rkill", redis.kill, redis.start, 11.5))  # 10 s


def test_redis_frozen(site, servers):
    redis = servers[1]
    assert_clean(run_scenario(site, servers, "rfreeze", redis.freeze, redis.thaw, 6.5))  # 5 s


def test_replay_after_redis_freeze_and_reload_reads_its_write(site, servers):
    """Post 100, read (cached), freeze Redis, spend 1, reload gunicorn, thaw
    Redis, replay the spend: every read after that shows 99."""
    base, token, server, _ = site
    redis = servers[1]
    url = f"{base}/api/content/ledger/"
    grant = {"owner_id": "repro", "operation": "CREDIT_ADD", "nonce": "r-grant", "amount": 100}
    assert call("POST", url, grant, token)[0] == 201
    assert call("GET", f"{url}repro/", token=token)[1]["balance"] == 100
    spend = {"owner_id": "repro", "operation": "CREDIT_SPEND", "nonce": "r-spend"}
    redis.freeze()
    try:
        status, entry, _ = call("POST", url, spend, token)
        assert (status, entry["balance_after"]) == (201, 99)
        os.kill(server.pid, signal.SIGHUP)
        time.sleep(2)
    finally:
        redis.thaw()
    status, _, headers = call("POST", url, spend, token)
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, balance, _ = call("GET", f"{url}repro/", token=token)
        assert (status, balance["balance"]) == (200, 99), balance
    assert Path(f"/proc/{server.pid}").exists()


WORKERS_LOOPING = {
    "expire_credits": ["--loop", "0.3", "--no-progress"],
    "expire_holds": ["--loop", "0.3"],
    "deliver_webhooks": ["--loop", "0.3"],
    "verify_ledger": ["--loop", "0.3", "--no-progress"],
}


def test_workers_keep_running_through_a_postgresql_restart_and_outage(site, servers, tmp_path):
    """The long-running commands survive their database going away: a
    restart (their connections are terminated) and then 3 s with no server
    (they cannot connect). Each logs the outage once and its end, and goes on
    working afterwards."""
    env = {**site[3], "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
    cluster = servers[0]
    logs = {name: tmp_path / f"{name}.log" for name in WORKERS_LOOPING}
    workers = {}
    try:
        for name, args in WORKERS_LOOPING.items():
            with open(logs[name], "w") as log:
                workers[name] = subprocess.Popen(  # noqa: S603 (our own command line)
                    [sys.executable, "manage.py", name, *args],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
        time.sleep(2)  # a few passes each, with a connection open
        cluster.restart("fast")
        time.sleep(1)
        cluster.stop()
        time.sleep(3)
        cluster.start()
        time.sleep(3)  # passes after the outage
        alive = {name: proc.poll() is None for name, proc in workers.items()}
    finally:
        for proc in workers.values():
            proc.terminate()
            proc.wait(timeout=15)
    texts = {name: log.read_text() for name, log in logs.items()}
    assert all(alive.values()), (alive, texts)
    for name, text in texts.items():
        assert "Traceback" not in text, (name, text)
        # One warning per outage (the restart's and the stop's may be one).
        assert 1 <= text.count("database unavailable") <= 2, (name, text)
        assert text.count("database available again") == text.count("database unavailable")
    for name, done in (("expire_credits", "lots expired"), ("expire_holds", "holds released"),
                       ("verify_ledger", "ledger consistent")):  # fmt: skip
        after = texts[name].rsplit("database available again", 1)[1]
        assert done in after, (name, texts[name])
