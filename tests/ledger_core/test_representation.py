"""Entries and balances are rendered by plain functions (``PlainRepresentation``);
they must give exactly what DRF's field-by-field rendering of the declared
fields gives (``LEDGER_PLAIN_REPRESENTATION = False``), keys in order. Real
PostgreSQL; every kind of entry and balance the API shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from ledger_core.actors import Actor
from ledger_core.api.serializers import (
    BalanceSerializer,
    DryRunEntrySerializer,
    EntrySerializer,
)
from ledger_core.models import LedgerEntry
from ledger_core.selectors import balance_get, entry_list
from ledger_core.services import entry_post, entry_reverse, hold_capture, hold_place
from tests.conftest import SYSTEM, fund

pytestmark = pytest.mark.django_db

MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)


def both(serializer_class, instance, **kwargs) -> tuple[list, list]:
    """(plain, DRF's) output for ``instance``, as ordered lists of items."""
    plain = serializer_class(instance, **kwargs).data
    with override_settings(LEDGER_PLAIN_REPRESENTATION=False):
        drf = serializer_class(instance, **kwargs).data
    if kwargs.get("many"):
        return [list(x.items()) for x in plain], [list(x.items()) for x in drf]
    return list(plain.items()), list(drf.items())


def post(operation: str, amount: int, nonce: str, **kwargs) -> LedgerEntry:
    return entry_post(
        owner_id="alice", operation=operation, nonce=nonce, app="content", actor=MANAGER,
        amount=amount, **kwargs,
    ).entry  # fmt: skip


def test_every_kind_of_entry_renders_as_drf_renders_it():
    fund("alice", 10)
    lot = post("CREDIT_ADD", 5, "lot", expires_at=timezone.now() + timedelta(days=2))
    post("CREDIT_ADD", 1, "meta", metadata={"why": "welcome", "n": [1, 2.5, None]})
    spent = post("CREDIT_SPEND", -7, "spend")  # takes the lot's credits first
    assert spent.consumed == [{"entry": lot.pk, "amount": 5}]
    reversal = entry_reverse(
        entry_id=spent.pk, app="content", actor=MANAGER, nonce="undo", reason="refund"
    ).entry
    held = hold_place(
        owner_id="alice", operation="CREDIT_SPEND", nonce="h", app="content", actor=MANAGER,
        amount=-2,
    ).hold  # fmt: skip
    capture = hold_capture(hold_id=held.pk, app="content", actor=MANAGER).entry
    assert reversal.reverses == spent.pk and capture.hold == held.pk
    history = list(entry_list(owner_id="alice"))  # annotated with reversed_by
    assert any(entry.reversed_by == reversal.pk for entry in history)
    stored = [*LedgerEntry.objects.filter(owner_id="alice"), *history, reversal, capture]
    assert len(stored) == 14
    for entry in stored:
        plain, drf = both(EntrySerializer, entry)
        assert plain == drf
    plain, drf = both(EntrySerializer, history, many=True)
    assert plain == drf
    # A dry run's entry has no id yet.
    tried = entry_post(
        owner_id="alice", operation="CREDIT_SPEND", nonce="try", app="content", actor=MANAGER,
        amount=-1, dry_run=True,
    ).entry  # fmt: skip
    assert tried.pk is None
    plain, drf = both(DryRunEntrySerializer, tried)
    assert plain == drf


def test_every_kind_of_balance_renders_as_drf_renders_it():
    views = [balance_get(owner_id="nobody")]  # no entries: updated_at None
    fund("alice", 3)
    views.append(balance_get(owner_id="alice"))
    now = timezone.now()
    for days, amount in ((3, 4), (1, 2)):
        entry_post(owner_id="alice", operation="CREDIT_ADD", nonce=f"lot{days}", app="content",
                   actor=SYSTEM, amount=amount, expires_at=now + timedelta(days=days))  # fmt: skip
    hold_place(
        owner_id="alice", operation="CREDIT_SPEND", nonce="h", app="content", actor=MANAGER,
        amount=-1,
    )  # fmt: skip
    views.append(balance_get(owner_id="alice"))
    assert len(views[-1].expiring) == 2 and views[-1].held == 1
    for view in views:
        plain, drf = both(BalanceSerializer, view)
        assert plain == drf
