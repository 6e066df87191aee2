"""The set-based statements (batches, lot moves, expiry sweeps) bind their
arrays in binary (psycopg's ``%b``): values round-trip unchanged, whatever
characters they hold, with server-side binding (the default) and with
client-side binding (``DATABASE_PREPARED_STATEMENTS=0``, for poolers that
cannot keep prepared statements)."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from ledger_core.models import CreditLot, LedgerEntry
from ledger_core.selectors import balance_get
from ledger_core.services import EntryRequest, entry_post_batch
from tests.conftest import SYSTEM
from tests.ledger_core.test_lots import assert_lots_add_up

# Every character an array's text form would have to quote or escape.
AWKWARD = 'n{1},"2"\\3NULL'


@pytest.fixture(params=["server", "client"])
def binding(request):
    """The connection with server-side binding (as configured) or client-side."""
    options = connection.settings_dict["OPTIONS"]
    saved = dict(options)
    if request.param == "client":
        options.pop("server_side_binding", None)
        options.pop("prepare_threshold", None)
    connection.close()
    connection.ensure_connection()
    client_side = issubclass(connection.connection.cursor_factory, psycopg.ClientCursor)
    assert client_side == (request.param == "client")
    yield request.param
    options.clear()
    options.update(saved)
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_batches_store_every_value_as_given(binding):
    soon = timezone.now() + timedelta(seconds=0.6)
    later = timezone.now() + timedelta(days=1)
    metadata = {"note": AWKWARD, "n": [1, None]}
    entries = [
        EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce=AWKWARD, amount=7,
                     metadata=metadata),
        EntryRequest(owner_id="alice", operation="CREDIT_ADD", nonce="lot", amount=3,
                     expires_at=later),
        EntryRequest(owner_id="bob:x@y", operation="CREDIT_ADD", nonce="soon", amount=2,
                     expires_at=soon),
        EntryRequest(owner_id="alice", operation="CREDIT_SPEND", nonce="spend", amount=-4),
    ]  # fmt: skip
    results = entry_post_batch(app="content", actor=SYSTEM, entries=entries)
    assert [r.status for r in results] == [201, 201, 201, 201]
    stored = LedgerEntry.objects.get(owner_id="alice", nonce=AWKWARD)
    assert (stored.amount, stored.metadata, stored.balance_after) == (7, metadata, 7)
    lot = LedgerEntry.objects.get(owner_id="alice", nonce="lot")
    assert lot.expires_at == later
    spent = LedgerEntry.objects.get(owner_id="alice", nonce="spend")
    assert spent.consumed == [{"entry": lot.pk, "amount": 3}] and spent.balance_after == 6
    assert CreditLot.objects.get(entry=lot.pk).remaining == 0
    assert balance_get(owner_id="bob:x@y").balance == 2

    # The same batch again is a replay of each entry, found by (owner, nonce).
    again = entry_post_batch(app="content", actor=SYSTEM, entries=entries)
    assert [(r.status, r.entry.pk) for r in again] == [(200, r.entry.pk) for r in results]

    # The sweep expires the lot past its expiry (arrays of owners and lots).
    time.sleep(0.7)
    out = io.StringIO()
    call_command("expire_credits", "--no-progress", stdout=out)
    assert out.getvalue().startswith("1 lots expired")
    assert balance_get(owner_id="bob:x@y").balance == 0
    expiry = LedgerEntry.objects.get(owner_id="bob:x@y", operation="CREDIT_EXPIRY")
    assert expiry.amount == -2
    for owner in ("alice", "bob:x@y"):
        assert_lots_add_up(owner)
    out = io.StringIO()
    call_command("verify_ledger", "--no-progress", stdout=out)
    assert "ledger consistent" in out.getvalue()
