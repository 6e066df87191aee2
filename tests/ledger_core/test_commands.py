"""grant_credits, verify_ledger and create_service_account, run as commands."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from bench import common
from bench.common import service_account_password
from ledger_core.models import Balance, LedgerEntry
from tests.conftest import SYSTEM, fund
from tests.livehelpers import (
    ROOT,
    free_port,
    manage,
    running_server,
    scrape,
    site_env,
    temp_database,
)

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write_csv(tmp_path, text: str):
    path = tmp_path / "grants.csv"
    path.write_text(text)
    return str(path)


# --- grant_credits ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _known_owners():
    # Grants go to owners that exist (a user or a ledger) unless --allow-new-owners.
    from tests.factories import UserFactory

    for name in ("alice", "bob", "carol", "a"):
        UserFactory(username=name)


def test_unknown_owners_are_refused_by_name_and_nothing_is_granted(tmp_path):
    with pytest.raises(CommandError, match="1 owner.*nobody-here.*--allow-new-owners"):
        run("grant_credits", "--owner", "nobody-here", "--amount", "5", "--nonce", "n")
    path = write_csv(tmp_path, "owner_id,amount,nonce\nalice,1,g1\nbobb,2,g2\nzed,3,g3\n")
    with pytest.raises(CommandError, match="2 owner.*bobb, zed"):
        run("grant_credits", "--csv", path)
    assert not LedgerEntry.objects.exists()
    out, _ = run("grant_credits", "--csv", path, "--allow-new-owners")
    assert "granted 3 entries" in out
    fund("ledger-only", 1)  # an owner with a ledger and no user is known too
    run("grant_credits", "--owner", "ledger-only", "--amount", "5", "--nonce", "n")


def test_progress_bar_only_on_a_terminal_and_summary_is_one_line(tmp_path):
    rows = "".join(f"alice,1,g{i}\n" for i in range(30))
    out, err = run("grant_credits", "--csv", write_csv(tmp_path, "owner_id,amount,nonce\n" + rows))
    assert err == ""  # not a terminal: no progress bar
    assert out.count("\n") == 1 and out.startswith("granted 30 entries")


def test_single_grant_and_idempotent_rerun():
    out, _ = run("grant_credits", "--owner", "alice", "--amount", "25", "--nonce", "promo-1")
    assert "granted 1 entry (+25 credits) to 1 owner(s); 0 replay(s)" in out
    entry = LedgerEntry.objects.get(owner_id="alice")
    assert (entry.operation, entry.app, entry.amount) == ("CREDIT_ADD", "content", 25)
    assert entry.created_by.startswith("cli:grant_credits:")
    out, _ = run("grant_credits", "--owner", "alice", "--amount", "25", "--nonce", "promo-1")
    assert "granted 0 entries (+0 credits) to 0 owner(s); 1 replay(s)" in out
    assert Balance.objects.get(owner_id="alice").balance == 25


def test_single_grant_with_operation_app_and_reason():
    fund("bob", 10)
    run(
        "grant_credits", "--owner", "bob", "--amount", "-4", "--nonce", "fix",
        "--operation", "CREDIT_SPEND", "--app", "rewards", "--reason", "chargeback",
    )  # fmt: skip
    entry = LedgerEntry.objects.get(nonce="fix")
    assert (entry.app, entry.amount, entry.metadata["reason"]) == ("rewards", -4, "chargeback")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--owner", "bad owner", "--amount", "5", "--nonce", "n"], "owner_id"),
        (["--owner", "a", "--amount", "five", "--nonce", "n"], "not an integer"),
        (["--owner", "a", "--amount", "-5", "--nonce", "n"], "positive"),
        (["--owner", "a", "--amount", "5", "--nonce", "n", "--operation", "NOPE"], "allowed"),
        (
            ["--owner", "a", "--amount", "5", "--nonce", "n", "--app", "nosuch"],
            "unknown app 'nosuch'",
        ),
        (
            ["--owner", "a", "--amount", "5", "--nonce", "n", "--operation", "DAILY_REWARD"],
            "may not",
        ),
        (["--owner", "a", "--amount", "99999999", "--nonce", "n"], "at most"),
        (["--owner", "a", "--amount", "5"], "--nonce"),
        (
            [
                "--owner",
                "a",
                "--amount",
                "5",
                "--nonce",
                "n",
                "--app",
                "rewards",
                "--operation",
                "REFERRAL_BONUS",
            ],
            "directly",
        ),
    ],
)
def test_single_grant_rejects_what_the_api_rejects(args, message):
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("grant_credits", *args, stdout=out, stderr=err)
    assert message in err.getvalue() + out.getvalue() + str(refused.value)
    assert not LedgerEntry.objects.exists()


def test_csv_grant_and_rerun_reports_replays(tmp_path):
    path = write_csv(
        tmp_path,
        "owner_id,amount,nonce,operation\nalice,10,g1,\nbob,20,g2,CREDIT_ADD\nalice,5,g3,\n",
    )
    out, _ = run("grant_credits", "--csv", path)
    assert "granted 3 entries (+35 credits) to 2 owner(s); 0 replay(s)" in out
    assert Balance.objects.get(owner_id="alice").balance == 15
    out, _ = run("grant_credits", "--csv", path)
    assert "granted 0 entries (+0 credits) to 0 owner(s); 3 replay(s)" in out
    assert LedgerEntry.objects.count() == 3


def test_single_grant_with_expiry_is_an_expiring_credit_and_replays():
    from ledger_core.models import CreditLot

    expires = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    args = ["--owner", "alice", "--amount", "7", "--nonce", "promo-x"]
    out, _ = run("grant_credits", *args, "--expires-at", expires.isoformat())
    assert "granted 1 entry (+7 credits)" in out
    entry = LedgerEntry.objects.get(owner_id="alice")
    assert entry.expires_at == expires
    lot = CreditLot.objects.get(entry=entry.pk)
    assert (lot.amount, lot.remaining, lot.expires_at) == (7, 7, expires)
    out, _ = run("grant_credits", *args, "--expires-at", expires.isoformat())
    assert "1 replay(s)" in out
    # The nonce is bound to the expiry it was granted with.
    later = (expires + timedelta(days=1)).isoformat()
    with pytest.raises(CommandError, match="nonce"):
        run("grant_credits", *args, "--expires-at", later)
    assert LedgerEntry.objects.count() == 1


def test_csv_expires_at_column_and_default(tmp_path):
    soon = (timezone.now() + timedelta(days=10)).replace(microsecond=0)
    default = (timezone.now() + timedelta(days=90)).replace(microsecond=0)
    path = write_csv(
        tmp_path,
        f"owner_id,amount,nonce,expires_at\nalice,3,e1,{soon.isoformat()}\nbob,4,e2,\n",
    )
    out, _ = run("grant_credits", "--csv", path, "--expires-at", default.isoformat())
    assert "granted 2 entries (+7 credits)" in out
    assert LedgerEntry.objects.get(nonce="e1").expires_at == soon
    assert LedgerEntry.objects.get(nonce="e2").expires_at == default


@pytest.mark.parametrize(
    "expires_at, amount, message",
    [
        ("2030-01-01T00:00:00", "5", "with a time zone"),
        ("next tuesday", "5", "with a time zone"),
        ("2001-01-01T00:00:00Z", "5", "in the future"),
        ("2030-01-01T00:00:00Z", "-5", "only for credits"),
    ],
)
def test_grant_expiry_is_checked_as_the_api_checks_it(expires_at, amount, message):
    fund("alice", 10)
    before = LedgerEntry.objects.count()
    out, err = io.StringIO(), io.StringIO()
    operation = "CREDIT_ADD" if not amount.startswith("-") else "CREDIT_SPEND"
    with pytest.raises(CommandError) as refused:
        call_command(
            "grant_credits", "--owner", "alice", "--amount", amount, "--nonce", "x",
            "--operation", operation, "--expires-at", expires_at, stdout=out, stderr=err,
        )  # fmt: skip
    assert message in err.getvalue() + out.getvalue() + str(refused.value)
    assert LedgerEntry.objects.count() == before


def test_csv_bad_rows_reported_by_line_and_nothing_granted(tmp_path):
    path = write_csv(
        tmp_path,
        "owner_id,amount,nonce\n"
        "alice,10,g1\n"
        "bad owner,10,g2\n"
        "bob,ten,g3\n"
        "carol,10,\n"
        "dave,-3,g5\n"
        "alice,11,g1\n",
    )
    with pytest.raises(CommandError, match="5 bad row"):
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("grant_credits", "--csv", path, stdout=out, stderr=err)
        finally:
            report = err.getvalue()
    assert "line 3: owner_id" in report
    assert "line 4: amount 'ten'" in report
    assert "line 5: nonce" in report
    assert "line 6: amount must be a non-zero positive" in report
    assert "line 7: nonce 'g1' for 'alice' is also used on line 2" in report
    assert "line 2" not in report.replace("on line 2", "")
    assert not LedgerEntry.objects.exists()


def test_csv_runtime_refusal_grants_nothing(tmp_path):
    path = write_csv(
        tmp_path,
        "owner_id,amount,nonce,operation\nalice,10,g1,CREDIT_ADD\nbob,-5,s1,CREDIT_SPEND\n",
    )
    refusal = r"line 3: Available 0 \(balance 0, held 0\) does not cover 5"
    with pytest.raises(CommandError, match=refusal):
        run("grant_credits", "--csv", path)
    assert not LedgerEntry.objects.exists()


def test_csv_header_is_checked(tmp_path):
    with pytest.raises(CommandError, match="header"):
        run("grant_credits", "--csv", write_csv(tmp_path, "owner,amount\nalice,1\n"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("owner_id,amount,nonce\nalice,1,n\n".encode("utf-16"), "not UTF-8 text"),
        (b"owner_id,amount,nonce\nalice,1,n\nbob,1,\xff\n", "not UTF-8 text"),
        (f'owner_id,amount,nonce\nalice,1,"{"x" * 200_000}"\n'.encode(), "not a readable CSV"),
    ],
)
def test_a_file_that_is_not_utf8_csv_is_a_clear_error(tmp_path, content, message):
    # A spreadsheet saved in another encoding, or a field no CSV reader takes.
    path = tmp_path / "grants.csv"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        run("grant_credits", "--csv", str(path))
    assert not LedgerEntry.objects.exists()


# --- verify_ledger -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify_ledger", "--owner", "not an owner!"], "owner_id must be"),
        (["verify_ledger", "--since-head", f"alice={'z' * 64}"], "64 hex digits"),
        (["verify_ledger", "--max-report", "-1"], "not a count"),
        (["expire_credits", "--loop", "-5"], "not a number of seconds above 0"),
        (["expire_holds", "--loop", "0"], "not a number of seconds above 0"),
        (["deliver_webhooks", "--loop", "nan"], "not a number of seconds above 0"),
        (["expire_credits", "--metrics-port", "99999"], "not a port"),
        (["deliver_webhooks", "--metrics-port", "-1"], "not a port"),
        # A single pass ends before any scrape: a metrics port needs --loop.
        *[
            ([command, "--metrics-port", "9100"], "add --loop SECONDS")
            for command in ("verify_ledger", "expire_credits", "deliver_webhooks")
        ],
    ],
)
def test_bad_command_arguments_are_clear_errors(args, message):
    # Refused before any work (a negative --loop used to fail only after the
    # first sweep, with a traceback from time.sleep).
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_verify_unknown_owner_says_so():
    with pytest.raises(CommandError, match="'nobody-here' has no ledger and no user"):
        run("verify_ledger", "--owner", "nobody-here", "--no-progress")


@pytest.mark.slow
def test_verify_merges_in_the_databases_own_order_of_owner_ids():
    # A database whose owner ids sort as en-US does ("ab" before "Ab"; Python
    # puts "Ab" first). An owner with a balance row and no entries ("ab", a
    # row opened at 0 and never posted to) sits where the two orders
    # disagree: entries and balances must still be matched owner by owner.
    locale = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    with temp_database(locale) as database_url:
        env = site_env(DATABASE_URL=database_url, REDIS_URL=None, DJANGO_SECRET_KEY="x")
        manage(env, "migrate", "--noinput")
        for owner in ("Ab", "a-b", "AB"):
            manage(env, "grant_credits", "--owner", owner, "--amount", "5", "--nonce", "g",
                   "--allow-new-owners",
                   "--no-progress")  # fmt: skip
        dsn = common.admin_dsn(database_url, database_url.rsplit("/", 1)[1])
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT o FROM (VALUES ('ab'), ('Ab')) v(o) ORDER BY o")
            assert [row[0] for row in rows] == ["ab", "Ab"]  # not Python's order
            # A row as a batch opens one (ledger_core.services.batches).
            conn.execute(
                "INSERT INTO ledger_core_balance (owner_id, balance, version, updated_at) "
                "VALUES ('ab', 0, 0, now())"
            )
        result = subprocess.run(
            [sys.executable, "manage.py", "verify_ledger", "--no-progress"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 4 owner(s), 3 entries" in result.stdout and "ledger consistent" in result.stdout


def test_verify_clean_ledger_passes():
    fund("alice", 5)
    fund("bob", 3)
    out, _ = run("verify_ledger", "--no-progress")
    assert "checked 2 owner(s), 2 entries" in out and "ledger consistent" in out
    out, _ = run("verify_ledger", "--owner", "alice", "--no-progress")
    assert "checked 1 owner(s), 1 entry" in out


def corrupt(sql: str, params: list) -> None:
    """Change rows behind the ledger's back, with the immutability trigger off."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE ledger_core_ledgerentry DISABLE TRIGGER ledger_core_entry_no_update_delete"
        )
        cursor.execute(sql, params)
        cursor.execute(
            "ALTER TABLE ledger_core_ledgerentry ENABLE TRIGGER ledger_core_entry_no_update_delete"
        )


def test_verify_reports_inconsistent_data_and_exits_1():
    fund("alice", 5)
    second = fund("alice", 4)
    fund("bob", 3)
    fund("carol", 2)
    corrupt("UPDATE ledger_core_ledgerentry SET amount = 40 WHERE id = %s", [second.pk])
    corrupt("UPDATE ledger_core_balance SET balance = 30 WHERE owner_id = %s", ["bob"])
    corrupt("DELETE FROM ledger_core_balance WHERE owner_id = %s", ["carol"])
    with pytest.raises(SystemExit) as exit_info:
        out, _ = io.StringIO(), None
        call_command("verify_ledger", "--no-progress", stdout=out, stderr=io.StringIO())
    assert exit_info.value.code == 1
    report = out.getvalue()
    assert (
        f"owner=alice: entry {second.pk}: balance_after 9 but the entries before it add up to 45"
        in report
    )
    assert "owner=alice: balance 9 but entries add up to 45" in report
    assert "owner=bob: balance 30 but entries add up to 3" in report
    assert "owner=carol: 1 entries but no balance row" in report
    # The rewritten amount also breaks alice's hash chain at that entry.
    assert f"owner=alice: hash chain broken at seq 2 (entry {second.pk})" in report
    assert "5 discrepancies" in report


def test_verify_reports_event_positions_ahead_of_the_database():
    """As after loading a logical dump into a new cluster, whose transaction
    ids start below those the rows carry."""
    entry = fund("alice", 5)
    corrupt("UPDATE ledger_core_ledgerentry SET xid = xid + 10000000 WHERE id = %s", [entry.pk])
    with pytest.raises(SystemExit):
        out = io.StringIO()
        call_command("verify_ledger", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "owner=*: stored events carry transaction ids up to" in out.getvalue()
    assert "1 discrepancy" in out.getvalue()


def test_verify_reports_negative_running_balance():
    first = fund("alice", 5)
    corrupt(
        "UPDATE ledger_core_ledgerentry SET amount = -5 WHERE id = %s",
        [first.pk],
    )
    corrupt("UPDATE ledger_core_balance SET balance = 0 WHERE owner_id = %s", ["alice"])
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_ledger", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "running balance -5 < 0" in out.getvalue()


def test_verify_checks_held_against_pending_holds():
    from ledger_core.services import hold_place

    fund("alice", 5)
    hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce="h", app="content",
               actor=SYSTEM, amount=-2)  # fmt: skip
    out, _ = run("verify_ledger", "--no-progress")
    assert "ledger consistent" in out
    corrupt("UPDATE ledger_core_ledgerhold SET status = 'voided' WHERE nonce = %s", ["h"])
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_ledger", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "owner=alice: held 2 but pending holds reserve 0" in out.getvalue()


# --- create_service_account --------------------------------------------------------------


def test_create_service_account_can_post_for_anyone(api_client):
    out, _ = run("create_service_account", "billing-svc")
    password = service_account_password(out)
    assert "/api/auth/token/" in out
    user = get_user_model().objects.get(username="billing-svc")
    assert user.has_perm("ledger_core.post_any_entry")
    tokens = api_client.post(
        "/api/auth/token/", {"username": "billing-svc", "password": password}, format="json"
    ).json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    response = api_client.post(
        "/api/content/ledger/",
        {"owner_id": "anyone", "operation": "CREDIT_ADD", "nonce": "svc-1", "amount": 50},
        format="json",
    )
    assert response.status_code == 201


def test_create_service_account_refuses_existing_unless_reset():
    run("create_service_account", "svc")
    with pytest.raises(CommandError, match="exists"):
        run("create_service_account", "svc")
    out, _ = run("create_service_account", "svc", "--reset-password")
    assert "password" in out
    with pytest.raises(CommandError):
        run("create_service_account", "bad name")


@pytest.mark.parametrize("flags", [[], ["--view-only"], ["--reset-password"]])
def test_a_service_account_is_not_given_an_owners_ledger(flags):
    # "cust-42" has credits but no user (an owner id credited directly); an
    # account of that name would be their owner, and an owner may spend them.
    fund("cust-42", 40)
    with pytest.raises(CommandError, match="'cust-42' already has a ledger"):
        run("create_service_account", "cust-42", *flags)
    assert not get_user_model().objects.filter(username__iexact="cust-42").exists()


def _gauges(port: int) -> dict[str, float]:
    return scrape(f"http://127.0.0.1:{port}/metrics")


def _gauges_once(port: int, ready: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while not ready(gauges := _gauges(port)):
        assert time.monotonic() < deadline, gauges
        time.sleep(0.2)
    return gauges


@pytest.mark.slow
def test_the_verifier_worker_serves_each_checks_result_and_keeps_running(tmp_path):
    """verify_ledger --loop checks again and again and serves the last check's
    result: none found, then, once a balance is changed behind the ledger's
    back, the discrepancy; a worker does not exit on one."""
    with common.temp_database("ledger_live") as (url, dsn):
        env = site_env(DATABASE_URL=url, LOG_LEVEL="WARNING")
        manage(env, "migrate", "--noinput")
        for owner, amount in (("alice", "5"), ("bob", "3")):
            manage(env, "grant_credits", "--owner", owner, "--amount", amount, "--nonce", "seed",
                   "--allow-new-owners", "--no-progress")  # fmt: skip
        port = free_port()
        cmd = [
            sys.executable, "manage.py", "verify_ledger", "--loop", "0.5", "--no-progress",
            "--metrics-port", str(port),
        ]  # fmt: skip
        log = tmp_path / "verifier.log"
        with running_server(cmd, env, f"http://127.0.0.1:{port}/metrics", log) as proc:
            first = _gauges_once(port, lambda g: g["ledger_verify_last_run_timestamp_seconds"] > 0)
            assert first["ledger_verify_discrepancies"] == 0
            assert first["ledger_verify_interval_seconds"] == 0.5
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE ledger_core_balance SET balance = 30 WHERE owner_id = 'bob'")
            found = _gauges_once(port, lambda g: g["ledger_verify_discrepancies"] > 0)
            assert found["ledger_verify_discrepancies"] == 1
            assert (
                found["ledger_verify_last_run_timestamp_seconds"]
                > (first["ledger_verify_last_run_timestamp_seconds"])
            )
            time.sleep(1)  # more checks, each finding it again
            assert proc.poll() is None
            assert _gauges(port)["ledger_verify_discrepancies"] == 1
        text = log.read_text()
    assert "checked 2 owner(s), 2 entries" in text and "ledger consistent" in text
    assert "owner=bob: balance 30 but entries add up to 3" in text
    assert "Traceback" not in text
