"""The per-owner hash chain: every way an entry is written chains it, and
rewriting or removing history is caught by verify_ledger and by the
standalone verifier of docs/hash-chain.md, run on the API's JSON."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from ledger_core import chain
from ledger_core.actors import Actor
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import (
    EntryRequest,
    entry_post,
    entry_post_batch,
    entry_reverse,
    hold_capture,
    hold_place,
)
from tests.conftest import SYSTEM, fund

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)


def verifier(tmp_path) -> Path:
    """The standalone verifier, exactly as docs/hash-chain.md prints it."""
    text = (ROOT / "docs" / "hash-chain.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.splitlines()) < 60
    path = tmp_path / "verify_chain.py"
    path.write_text(code)
    return path


def api_history(client, owner_id: str) -> list[dict]:
    url, entries = f"/api/content/ledger/{owner_id}/entries/?page_size=200", []
    while url:
        page = client.get(url).json()
        entries += page["results"]
        url = page["next"]
    return entries


def run_verifier(tmp_path, entries: list[dict], *head: str) -> subprocess.CompletedProcess:
    data = tmp_path / "entries.json"
    data.write_text(json.dumps(entries))
    return subprocess.run(
        [sys.executable, str(verifier(tmp_path)), str(data), *head],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("verify_ledger", "--no-progress", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def history():
    """alice's history through every writer: posts, a batch, a hold's capture,
    a reversal, an expired lot, metadata with awkward numbers."""
    fund("alice", 10)
    entry_post(
        owner_id="alice",
        operation="CREDIT_SPEND",
        nonce="s1",
        app="content",
        actor=MANAGER,
        amount=-2,
        metadata={"n": 1e2, "x": 0.1, "é": [True, None]},
    )
    entry_post_batch(
        app="content",
        actor=SYSTEM,
        entries=[
            EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce=f"b{i}", amount=1)
            for i in range(3)
        ],
    )
    hold = hold_place(
        owner_id="alice",
        operation="CREDIT_SPEND",
        nonce="h",
        app="content",
        actor=MANAGER,
        amount=-2,
    ).hold
    hold_capture(hold_id=hold.pk, app="content", actor=MANAGER, amount=-1)
    entry_post(
        owner_id="alice",
        operation="CREDIT_ADD",
        nonce="g",
        app="content",
        actor=SYSTEM,
        amount=4,
        expires_at=timezone.now() + timedelta(seconds=0.4),
    )
    time.sleep(0.5)
    call_command("expire_credits", "--no-progress", stdout=io.StringIO())
    entry_reverse(entry_id=LedgerEntry.objects.get(nonce="s1").pk, app="content",
                  actor=MANAGER, nonce="r1", reason="refund")  # fmt: skip


def test_every_writer_chains_its_entries(manager_client, tmp_path):
    history()
    entries = list(LedgerEntry.objects.filter(owner_id="alice").order_by("seq"))
    assert {e.operation for e in entries} >= {"CREDIT_ADD", "CREDIT_SPEND", "CREDIT_EXPIRY",
                                              "REVERSAL"}  # fmt: skip
    head = chain.GENESIS
    for number, entry in enumerate(entries, start=1):
        assert (entry.seq, entry.prev_hash) == (number, head)
        assert entry.hash == chain.hash_of(entry, head)
        head = entry.hash
    assert Balance.objects.get(owner_id="alice").head_hash == head
    balance = manager_client.get("/api/content/ledger/alice/").json()
    assert (balance["head_hash"], balance["seq"]) == (head, len(entries))
    code, report = verify()
    assert code == 0 and "ledger consistent" in report, report
    result = run_verifier(tmp_path, api_history(manager_client, "alice"), head)
    assert result.returncode == 0 and "chain intact" in result.stdout, result.stderr


def tamper(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE ledger_core_ledgerentry DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE ledger_core_ledgerentry ENABLE TRIGGER USER")


def test_a_consistent_rewrite_is_caught(manager_client, tmp_path):
    history()
    kept = Balance.objects.get(owner_id="alice").head_hash
    target = LedgerEntry.objects.get(owner_id="alice", nonce="s1")
    # amount -2 -> -1 and every later balance_after and the balance one up:
    # the sums still agree, only the chain can tell.
    tamper("UPDATE ledger_core_ledgerentry SET amount = -1 WHERE id = %s", [target.pk])
    tamper("UPDATE ledger_core_ledgerentry SET balance_after = balance_after + 1 "
           "WHERE owner_id = 'alice' AND seq >= %s", [target.seq])  # fmt: skip
    Balance.objects.filter(owner_id="alice").update(balance=Balance.objects.get(
        owner_id="alice").balance + 1)  # fmt: skip
    code, report = verify()
    assert code == 1
    assert f"owner=alice: hash chain broken at seq {target.seq} (entry {target.pk})" in report
    assert "balance_after" not in report  # the sums agree: only the chain tells
    result = run_verifier(tmp_path, api_history(manager_client, "alice"))
    assert result.returncode != 0 and f"BROKEN at seq {target.seq}" in result.stderr
    code, report = verify("--since-head", f"alice={kept}")
    assert code == 1 and "broken" in report


def test_a_removed_entry_is_caught(manager_client, tmp_path):
    history()
    target = LedgerEntry.objects.get(owner_id="alice", nonce="b1")
    tamper("DELETE FROM ledger_core_ledgerentry WHERE id = %s", [target.pk])
    code, report = verify("--owner", "alice")
    assert code == 1
    after = LedgerEntry.objects.get(owner_id="alice", seq=target.seq + 1)
    assert f"hash chain broken at seq {target.seq} (entry {after.pk})" in report
    result = run_verifier(tmp_path, api_history(manager_client, "alice"))
    assert result.returncode != 0 and f"BROKEN at seq {target.seq}" in result.stderr


def test_since_head_proves_a_kept_checkpoint(manager_client, tmp_path):
    fund("alice", 5)
    kept = Balance.objects.get(owner_id="alice").head_hash
    fund("alice", 1)
    assert verify("--since-head", f"alice={kept}")[0] == 0
    assert verify("--since-head", f"alice={kept.upper()}")[0] == 0  # as copied from a sheet
    code, report = verify("--since-head", f"alice={'f' * 64}")
    assert code == 1 and "is not a link of the owner's intact chain" in report
    assert run_verifier(tmp_path, api_history(manager_client, "alice"), kept).returncode == 0
    assert run_verifier(tmp_path, api_history(manager_client, "alice"), "f" * 64).returncode != 0


def test_the_migration_chains_entries_older_than_the_chain():
    from django.apps import apps

    migration = __import__("ledger_core.migrations.0008_hash_chain", fromlist=["chain_existing"])
    fund("alice", 5)
    fund("alice", 2)
    fund("bob", 1)
    # As before the chain: no hashes, heads at genesis.
    tamper("UPDATE ledger_core_ledgerentry SET hash = NULL, prev_hash = NULL", [])
    Balance.objects.update(head_hash=chain.GENESIS, head_prev=chain.GENESIS)
    assert verify()[0] == 1
    migration.chain_existing(apps, None)
    assert verify()[0] == 0
    migration.chain_existing(apps, None)  # resumed or re-run: nothing to do
    assert verify()[0] == 0
    # The trigger lets nothing else through.
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(owner_id="bob").update(amount=7)


def test_canonical_json_reads_the_same_after_postgresql_stores_it():
    metadata = {"b": [1, 2.0, 1e300, 0.1, -0.0, 1.5e-7], "a": {"é": 'x"y'}}
    entry = entry_post(owner_id="alice", operation="CREDIT_ADD", nonce="m", app="content",
                       actor=SYSTEM, amount=1, metadata=metadata).entry  # fmt: skip
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert chain.canonical_json(stored.metadata) == chain.canonical_json(metadata)
    assert stored.hash == chain.hash_of(stored, chain.GENESIS)
