"""Metrics, logs, health and the monitoring/ files, against real servers.

A module-scoped stack (gunicorn with 3 workers, a fresh PostgreSQL database,
Redis) serves the live tests; a real Prometheus scrapes it for the dashboard
and alert-rule checks.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from django.db import transaction

from ledger_core import metrics
from ledger_core.actors import Actor
from ledger_core.services import entry_post
from tests.factories import PASSWORD
from tests.livehelpers import (
    ROOT,
    call,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
    scrape,
    temp_database,
    wait_for,
)

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "ledger.json"
ALERTS = MONITORING / "alerts.yml"
#: The jobs of the long-running workers, as monitoring/prometheus.yml names them.
WORKER_JOBS = ("ledger-sweeper", "ledger-webhooks", "ledger-verifier")
#: The stack's /metrics answers only with it, as a deployment's may.
METRICS_TOKEN = "metrics-" + "t0k3n" * 6


class Stack:
    def __init__(self, base: str, log_path: Path, port: int, sweeper_port: int = 0) -> None:
        self.base, self.log_path, self.port = base, log_path, port
        self.sweeper_port = sweeper_port
        self.webhooks_port = 0
        self.verifier_port = 0
        self.env: dict[str, str] = {}
        self.tokens: dict[str, str] = {}

    def register(self, username: str) -> str:
        status, body, _ = call(
            "POST", f"{self.base}/api/auth/register/", {"username": username, "password": PASSWORD}
        )
        assert status == 201, body
        status, tokens, _ = call(
            "POST", f"{self.base}/api/auth/token/", {"username": username, "password": PASSWORD}
        )
        assert status == 200, tokens
        self.tokens[username] = tokens["access"]
        return tokens["access"]

    def metrics(self) -> dict[str, float]:
        """Sum of every sample per sample name, from one scrape."""
        return scrape(f"{self.base}/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    with temp_database() as database_url:
        env = gunicorn_env(
            tmp,
            DATABASE_URL=database_url,
            LOG_FORMAT="json",
            RATE_LIMIT_LEDGER_READ="40/m",
            METRICS_TOKEN=METRICS_TOKEN,
            CACHE_KEY_PREFIX=f"ledger-obs-{free_port()}",
        )
        manage(env, "migrate", "--noinput")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp / "gunicorn.log"
        # The credit sweeper as compose runs it, with its own metrics port.
        sweeper_port = free_port()
        sweeper = [
            sys.executable, "manage.py", "expire_credits", "--loop", "1", "--no-progress",
            "--metrics-port", str(sweeper_port),
        ]  # fmt: skip
        sweeper_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # And the webhook worker, likewise.
        webhooks_port = free_port()
        webhooks = [
            sys.executable, "manage.py", "deliver_webhooks", "--loop", "1",
            "--metrics-port", str(webhooks_port),
        ]  # fmt: skip
        # And the ledger verifier.
        verifier_port = free_port()
        verifier = [
            sys.executable, "manage.py", "verify_ledger", "--loop", "1", "--no-progress",
            "--metrics-port", str(verifier_port),
        ]  # fmt: skip
        with (
            running_server(gunicorn_cmd(port, 3), env, f"{base}/healthz", log_path),
            running_server(sweeper, sweeper_env, f"http://127.0.0.1:{sweeper_port}/metrics"),
            running_server(webhooks, sweeper_env, f"http://127.0.0.1:{webhooks_port}/metrics"),
            running_server(verifier, sweeper_env, f"http://127.0.0.1:{verifier_port}/metrics"),
        ):
            stack = Stack(base, log_path, port, sweeper_port)
            stack.webhooks_port = webhooks_port
            stack.verifier_port = verifier_port
            stack.env = env
            yield stack


@pytest.mark.slow
def test_ledger_entries_total_exact_on_every_scrape_across_workers(stack):
    token = stack.register("metrics-user")
    before = stack.metrics().get("ledger_entries_total", 0)
    posts = 24
    for i in range(posts):
        status, _, _ = call(
            "POST",
            f"{stack.base}/api/content/ledger/",
            {"owner_id": "metrics-user", "operation": "CONTENT_ACCESS", "nonce": f"m{i}"},
            token,
        )
        assert status == 201
    seen = [stack.metrics().get("ledger_entries_total", 0) - before for _ in range(12)]
    assert seen == [posts] * 12


@pytest.mark.slow
def test_request_log_line_is_json_with_request_id(stack):
    token = stack.register("log-user")
    status, _, headers = call(
        "GET",
        f"{stack.base}/api/content/ledger/log-user/?secret=1",
        token=token,
        request_id="req-abc.123",
    )
    assert status == 200 and headers["X-Request-ID"] == "req-abc.123"
    status, _, headers = call(
        "POST",
        f"{stack.base}/api/content/ledger/",
        {"owner_id": "log-user", "operation": "CREDIT_SPEND", "nonce": "log-1"},
        token,
        request_id="post-req-7",
    )
    assert status == 201
    _, _, headers = call("GET", f"{stack.base}/healthz", request_id="bad id with spaces")
    generated = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)

    time.sleep(0.5)
    lines = stack.log_lines()
    request_line = next(
        line
        for line in lines
        if line.get("request_id") == "req-abc.123" and line["event"] == "request"
    )
    assert request_line["method"] == "GET"
    assert request_line["path"] == "/api/content/ledger/log-user/"  # no query string
    assert request_line["status"] == 200 and request_line["user"] == "log-user"
    assert request_line["duration_ms"] >= 0 and request_line["level"] == "info"
    decision = next(
        line
        for line in lines
        if line.get("request_id") == "post-req-7" and line["event"] == "ledger.posted"
    )
    assert decision["outcome"] == "posted"
    assert (decision["owner_id"], decision["app"], decision["operation"]) == (
        "log-user",
        "content",
        "CREDIT_SPEND",
    )
    assert decision["amount"] == -1 and decision["nonce"] == "log-1"
    text = stack.log_path.read_text()
    assert PASSWORD not in text
    assert token not in text


@pytest.mark.slow
def test_refusal_is_logged_with_reason(stack):
    token = stack.register("refused-user")
    status, body, _ = call(
        "POST",
        f"{stack.base}/api/content/ledger/",
        {"owner_id": "refused-user", "operation": "CONTENT_CREATION", "nonce": "too-poor"},
        token,
        request_id="refused-1",
    )
    assert status == 409 and body["code"] == "insufficient_balance"
    time.sleep(0.5)
    line = next(
        line
        for line in stack.log_lines()
        if line.get("request_id") == "refused-1" and line["event"] == "ledger.refused"
    )
    assert line["reason"] == "insufficient_balance" and line["nonce"] == "too-poor"


@pytest.mark.slow
def test_health_and_readiness(stack):
    assert call("GET", f"{stack.base}/healthz")[0] == 200
    status, body, _ = call("GET", f"{stack.base}/readyz")
    assert status == 200
    assert body["checks"] == {"database": "ok", "cache": "ok"}


@pytest.mark.slow
def test_readyz_is_503_when_database_is_unreachable(tmp_path):
    env = gunicorn_env(
        tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(gunicorn_cmd(port, 1), env, f"{base}/healthz"):
        assert call("GET", f"{base}/healthz")[0] == 200
        status, body, _ = call("GET", f"{base}/readyz")
        assert status == 503
        assert body["checks"]["database"].startswith("error")
        assert body["checks"]["cache"] == "ok"
        # The API itself answers 503 unavailable, not a 500.
        status, body, headers = call(
            "POST", f"{base}/api/auth/register/", {"username": "x", "password": PASSWORD}
        )
        assert status == 503 and body["code"] == "unavailable"


def counter(family, *labels) -> float:
    return family.labels(*labels)._value.get()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_post_changes_no_metric():
    manager = Actor(name="m", owner_id="m", can_post_any=True)
    before = counter(metrics.ENTRIES, "content", "CREDIT_ADD")
    credits_before = counter(metrics.CREDITS, "content", "CREDIT_ADD", "credit")
    with pytest.raises(RuntimeError), transaction.atomic():
        entry_post(
            owner_id="alice",
            operation="CREDIT_ADD",
            nonce="rb",
            app="content",
            actor=manager,
            amount=5,
        )
        raise RuntimeError("roll back")
    assert counter(metrics.ENTRIES, "content", "CREDIT_ADD") == before
    assert counter(metrics.CREDITS, "content", "CREDIT_ADD", "credit") == credits_before
    entry_post(
        owner_id="alice", operation="CREDIT_ADD", nonce="ok", app="content", actor=manager, amount=5
    )
    assert counter(metrics.ENTRIES, "content", "CREDIT_ADD") == before + 1
    assert counter(metrics.CREDITS, "content", "CREDIT_ADD", "credit") == credits_before + 5


@pytest.mark.django_db
def test_rejections_and_replays_are_counted(alice_client):
    before = counter(metrics.REJECTIONS, "content", "CREDIT_SPEND", "insufficient_balance")
    invalid = counter(metrics.REJECTIONS, "content", "other", "invalid")
    body = {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "x"}
    assert alice_client.post("/api/content/ledger/", body, format="json").status_code == 409
    assert (
        counter(metrics.REJECTIONS, "content", "CREDIT_SPEND", "insufficient_balance") == before + 1
    )
    bad = {**body, "operation": "NOT_AN_OPERATION_" + "X" * 20}
    assert alice_client.post("/api/content/ledger/", bad, format="json").status_code == 400
    assert counter(metrics.REJECTIONS, "content", "other", "invalid") == invalid + 1
    replays = counter(metrics.REPLAYS, "rewards", "DAILY_REWARD")
    daily = {"owner_id": "alice", "operation": "DAILY_REWARD", "nonce": "d"}
    alice_client.post("/api/rewards/ledger/", daily, format="json")
    alice_client.post("/api/rewards/ledger/", daily, format="json")
    assert counter(metrics.REPLAYS, "rewards", "DAILY_REWARD") == replays + 1


def test_request_id_echoed_and_sanitised(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    for bad in ("", "has space", "x" * 129, "new\nline", "ünï"):
        response = client.get("/healthz", HTTP_X_REQUEST_ID=bad)
        assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"]), bad


# --- monitoring/ ----------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def test_promtool_accepts_config_and_rules():
    assert PROMTOOL, "promtool missing: make test installs Debian's prometheus package"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run(
            [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_verifier_alerts_fire_when_they_should(tmp_path):
    """promtool replays the verifier's gauges through the alert rules: a
    discrepancy alerts at once; no finished check for twice the interval plus
    an hour (counted from the worker's start before its first) alerts too."""
    assert PROMTOOL, "promtool missing: make test installs Debian's prometheus package"
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    target = '{job="ledger-verifier",instance="verifier:9103"}'
    labels = {"job": "ledger-verifier", "instance": "verifier:9103"}

    def alert(name: str) -> dict:
        annotations = dict(rules[name]["annotations"])
        annotations["summary"] = annotations["summary"].replace("{{ $value }}", "2")
        return {
            "exp_labels": {**labels, "severity": rules[name]["labels"]["severity"]},
            "exp_annotations": annotations,
        }

    def case(last_run: str, discrepancies: str, checks: list[tuple[str, str, bool]]) -> dict:
        return {
            "interval": "1m",
            "input_series": [
                {"series": f"ledger_verify_last_run_timestamp_seconds{target}", "values": last_run},
                {"series": f"ledger_verify_discrepancies{target}", "values": discrepancies},
                {"series": f"ledger_verify_interval_seconds{target}", "values": "60x100"},
                {"series": f"process_start_time_seconds{target}", "values": "0x100"},
            ],  # fmt: skip
            "alert_rule_test": [
                {"eval_time": at, "alertname": name, "exp_alerts": [alert(name)] if firing else []}
                for at, name, firing in checks
            ],  # fmt: skip
        }

    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            # Two discrepancies from the third check on.
            case(
                "0 60 120 180 240",
                "0 0 2 2 2",
                [("1m", "LedgerDiscrepancy", False), ("2m", "LedgerDiscrepancy", True)],
            ),
            # The first check never finishes: 62 minutes after the start, plus 5.
            case(
                "0x100",
                "0x100",
                [
                    ("60m", "LedgerVerifyOverdue", False),
                    ("70m", "LedgerVerifyOverdue", True),
                    ("70m", "LedgerDiscrepancy", False),
                ],
            ),
            # A check finished at 10m, then none: 62 minutes after it, plus 5.
            case(
                "0x9 600x100",
                "0x100",
                [("70m", "LedgerVerifyOverdue", False), ("80m", "LedgerVerifyOverdue", True)],
            ),
        ],  # fmt: skip
    }
    path = tmp_path / "verifier-alerts.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_failing_mail_alerts_for_fifteen_minutes(tmp_path):
    """promtool replays the web's mail failure counter (two workers) through
    the rules: a failure alerts at once, and the alert ends 15 minutes after
    the last one."""
    assert PROMTOOL, "promtool missing: make test installs Debian's prometheus package"
    rule = next(
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
        if rule.get("alert") == "LedgerMailFailing"
    )  # fmt: skip
    firing = [{"exp_labels": {"severity": rule["labels"]["severity"]},
               "exp_annotations": rule["annotations"]}]  # fmt: skip
    series = 'ledger_mail_failures_total{job="ledger",instance="web:8000",pid="%s"}'
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            # One worker's mail fails at 10m; the other's counter never moves.
            "input_series": [{"series": series % 1, "values": "0x9 1x60"},
                             {"series": series % 2, "values": "0x70"}],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "LedgerMailFailing", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "LedgerMailFailing", "exp_alerts": firing},
                {"eval_time": "24m", "alertname": "LedgerMailFailing", "exp_alerts": firing},
                {"eval_time": "27m", "alertname": "LedgerMailFailing", "exp_alerts": []},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "mail-alerts.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_dashboard():
    datasource = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in (
        "Posts/s",
        "Credits",
        "Rejections",
        "latency",
        "5xx",
        "Rate-limited",
        "Credits expired",
        "sweeper lag",
        "Webhook deliveries",
        "Webhook lag",
    ):
        assert any(needed.lower() in t.lower() for t in titles), needed
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


METRIC_NAME = re.compile(r"\b((?:ledger|django)_[a-z_]+|up)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    return set(METRIC_NAME.findall(without_by))


def prom_query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _traffic(stack, rounds: int = 4) -> None:
    """Traffic that gives every panel something to show, spread over several
    scrapes: rate() only sees increases between two samples of a series."""
    token = stack.register("prom-user")
    # Credits that expire during the traffic, for the sweeper (or the owner's
    # next write) to expire; far enough ahead for the command to start on a
    # busy machine (an instant in the past is refused).
    soon = datetime.now(UTC) + timedelta(seconds=8)
    manage(stack.env, "grant_credits", "--owner", "prom-user", "--amount", "2",
           "--nonce", "prom-expiring", "--expires-at", soon.isoformat())  # fmt: skip
    post_url = f"{stack.base}/api/content/ledger/"
    statuses = []
    for r in range(rounds):
        for i in range(2):
            body = {"owner_id": "prom-user", "operation": "CONTENT_ACCESS", "nonce": f"a{r}-{i}"}
            call("POST", post_url, body, token)
        spend = {"owner_id": "prom-user", "operation": "CREDIT_SPEND", "nonce": "s-1"}
        call("POST", post_url, spend, token)  # posted once, then replayed
        poor = {"owner_id": "prom-user", "operation": "CONTENT_CREATION", "nonce": f"poor{r}"}
        call("POST", post_url, poor, token)  # insufficient balance
        hold = {"owner_id": "prom-user", "operation": "CREDIT_SPEND", "nonce": f"h{r}"}
        status, placed, _ = call("POST", f"{stack.base}/api/content/ledger/holds/", hold, token)
        assert status == 201, placed
        call("POST", f"{stack.base}/api/content/ledger/holds/{placed['id']}/void/", {}, token)
        call(
            "POST", f"{stack.base}/api/auth/register/", {"username": f"p{r}", "password": PASSWORD}
        )
        # Exhaust the read budget in the first round so refusals span the scrapes.
        statuses += [
            call("GET", f"{stack.base}/api/content/ledger/prom-user/", token=token)[0]
            for _ in range(42 if r == 0 else 3)
        ]
        time.sleep(1.3)
    assert 429 in statuses  # the read limit is 40/m in this stack


@contextlib.contextmanager
def prometheus(tmp_path: Path, jobs: dict[str, int]) -> Iterator[str]:
    """A real Prometheus with the project's alert rules, scraping each job
    (``ledger`` and ``WORKER_JOBS``) at its port on
    loopback every second; yields its address. It sends the web's metrics
    token as README.md tells a deployment to: from a file, written with a
    trailing newline as ``echo`` would."""
    assert PROMETHEUS, "prometheus missing: make test installs Debian's prometheus package"
    prom_port = free_port()
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN + "\n")
    web_auth = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                **(web_auth if job == "ledger" else {}),
            }
            for job, port in jobs.items()
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    cmd = [
        PROMETHEUS,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    prom = f"http://127.0.0.1:{prom_port}"
    with running_server(cmd, dict(), f"{prom}/-/ready", tmp_path / "prometheus.log"):
        yield prom


@pytest.mark.slow
def test_prometheus_has_data_for_every_dashboard_and_alert_expression(stack, tmp_path):
    jobs = {
        "ledger": stack.port,
        "ledger-sweeper": stack.sweeper_port,
        "ledger-webhooks": stack.webhooks_port,
        "ledger-verifier": stack.verifier_port,
    }
    with prometheus(tmp_path, jobs) as prom:
        deadline = time.monotonic() + 30
        while not prom_query(prom, 'up{job="ledger"} == 1')["data"]["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped the stack"
            time.sleep(0.5)
        time.sleep(1.5)  # a baseline sample before the traffic
        _traffic(stack)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            result = prom_query(prom, "sum(rate(ledger_entries_total[1m]))")["data"]["result"]
            if result and float(result[0]["value"][1]) > 0:
                break
            time.sleep(1)
        else:
            pytest.fail("Prometheus never saw a ledger_entries_total rate")
        # The expiry comes after the traffic's first seconds: wait for two
        # samples of its counter, so that rate() has something to show.
        deadline = time.monotonic() + 45
        expired = "count_over_time(ledger_credits_expired_total[1m]) >= 2"
        while not prom_query(prom, expired)["data"]["result"]:
            assert time.monotonic() < deadline, "Prometheus never saw credits expire"
            time.sleep(1)
        time.sleep(2)  # a couple more samples of every series
        known = {
            r["metric"]["__name__"]
            for r in prom_query(prom, 'count by (__name__) ({__name__=~".+"})')["data"]["result"]
        }
        problems = []
        for expr in dashboard_exprs():
            answer = prom_query(prom, expr)
            if answer["status"] != "success" or not answer["data"]["result"]:
                problems.append(f"no data: {expr}")
        for expr in [*dashboard_exprs(), *alert_exprs()]:
            missing = metric_names(expr) - known
            if missing:
                problems.append(f"unknown metrics {sorted(missing)} in: {expr}")
        for expr in alert_exprs():
            if prom_query(prom, expr)["status"] != "success":
                problems.append(f"alert expression fails: {expr}")
        assert problems == [], "\n".join(problems)


@pytest.mark.slow
def test_a_worker_that_is_down_is_alerted(stack, tmp_path):
    """A stopped sweeper or webhook worker serves no metrics, so its own
    alerts cannot fire; LedgerWorkerDown does (pending, then firing after 5m)."""
    jobs = {"ledger": stack.port, **{job: free_port() for job in WORKER_JOBS}}
    with prometheus(tmp_path, jobs) as prom:
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"{prom}/api/v1/alerts", timeout=10) as response:  # noqa: S310
                alerts = json.loads(response.read())["data"]["alerts"]
            down = {
                a["labels"]["job"] for a in alerts if a["labels"]["alertname"] == "LedgerWorkerDown"
            }
            if down == set(WORKER_JOBS):
                break
            assert time.monotonic() < deadline, alerts
            time.sleep(0.5)
        names = {a["labels"]["alertname"] for a in alerts}
        assert "LedgerTargetDown" not in names, alerts  # the web target is up


def test_metric_name_extraction():
    assert metric_names('sum by (le) (rate(ledger_post_seconds_bucket{app="x"}[5m]))') == {
        "ledger_post_seconds_bucket"
    }
    assert metric_names('up{job="ledger"} == 0') == {"up"}


def test_metrics_endpoint_in_process(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert "django_http_requests_total_by_method_total" in body
    # The series the dashboards and alerts read, with their labels.
    assert 'django_http_responses_total_by_status_total{status="200"}' in body
    assert re.search(
        r'django_http_requests_latency_seconds_by_view_method_bucket\{[^}]*view="healthz"', body
    ), body


def test_wait_for_helper_times_out_quickly():
    with pytest.raises(TimeoutError):
        wait_for(f"http://127.0.0.1:{free_port()}/", timeout=0.5)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", "Bearer", f"Bearer {METRICS_TOKEN}x"],
)
def test_metrics_need_the_token_when_one_is_set(client, settings, authorization):
    settings.METRICS_TOKEN = METRICS_TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"django_http" not in response.content


def test_metrics_answer_the_token(client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    assert "django_http_requests_total_by_method_total" in response.content.decode()
    # The scheme's case does not matter (RFC 9110).
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {METRICS_TOKEN}")
    assert response.status_code == 200
