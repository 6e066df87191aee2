"""Entries and balances are rendered by plain functions (``PlainRepresentation``);
they must give exactly what DRF's field-by-field rendering of the declared
fields gives (``LEDGER_PLAIN_REPRESENTATION = False``), keys in order. Real
PostgreSQL; every kind of entry and balance the API shows."""

from __future__ import annotations

import re
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
TRIED = re.compile(rb'"(created_at|hash)":"[^"]+"')


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


def test_the_api_answers_the_same_bytes_either_way(manager_client):
    """Through HTTP, nested serializers included (the event feed, a dry run,
    a batch's results inside DRF-rendered wrappers)."""
    fund("alice", 10)
    post("CREDIT_ADD", 5, "lot", expires_at=timezone.now() + timedelta(days=2))
    post("CREDIT_SPEND", -7, "spend")
    content = "/api/content/ledger/"
    gets = [f"{content}alice/", f"{content}alice/entries/", "/api/events/"]
    posts = [
        (f"{content}?dry_run=true",
         {"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "t", "amount": -1}),
        (f"{content}batch/", {"entries": [
            {"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "b1", "amount": 1},
        ]}),
        (content, {"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "b1", "amount": 1}),
    ]  # fmt: skip
    for path, body in posts[1:]:  # stored once; below, both ways replay them
        assert manager_client.post(path, body, format="json").status_code in (200, 201)
    answers = {}
    for plain in (True, False):
        with override_settings(LEDGER_PLAIN_REPRESENTATION=plain):
            answers[plain] = [manager_client.get(path) for path in gets]
            answers[plain] += [manager_client.post(path, body, format="json")
                               for path, body in posts]  # fmt: skip
    for plain, drf in zip(answers[True], answers[False], strict=True):
        assert plain.status_code == drf.status_code == 200
        if b'"dry_run"' in plain.content:
            # A dry run's entry is timed (and so hashed) when it is tried.
            assert len(TRIED.findall(plain.content)) == 2
            assert TRIED.sub(b"", plain.content) == TRIED.sub(b"", drf.content)
        else:
            assert plain.content == drf.content
    assert b'"consumed":[{"entry":' in answers[True][1].content
