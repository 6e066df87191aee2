"""Reversals: a manager undoes an entry with one REVERSAL entry of the opposite
amount, at most once, never overdrawing, idempotent by nonce."""

from __future__ import annotations

import pytest

from ledger_core.actors import Actor
from ledger_core.exceptions import AlreadyReversed, InsufficientBalance
from ledger_core.models import Balance, LedgerEntry
from ledger_core.services import entry_post, entry_reverse
from tests.conftest import fund
from tests.ledger_core.test_concurrency import run_concurrently

pytestmark = pytest.mark.django_db

MANAGER = Actor(name="manager", owner_id="manager", can_post_any=True)


def reverse_url(entry_id: int, app: str = "content") -> str:
    return f"/api/{app}/ledger/entries/{entry_id}/reverse/"


def test_reverse_a_grant(manager_client, alice_client):
    grant = fund("alice", 10)
    body = {"nonce": "undo-1", "reason": "granted by mistake"}
    response = manager_client.post(reverse_url(grant.pk), body, format="json")
    assert response.status_code == 201, response.content
    reversal = response.json()
    assert (reversal["operation"], reversal["amount"], reversal["reverses"]) == (
        "REVERSAL", -10, grant.pk,
    )  # fmt: skip
    assert reversal["metadata"] == {"reason": "granted by mistake"}
    assert Balance.objects.get(owner_id="alice").balance == 0
    # Same nonce: the same reversal, replayed.
    again = manager_client.post(reverse_url(grant.pk), body, format="json")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == reversal["id"]
    # Another nonce: already reversed, naming the reversal.
    other = manager_client.post(reverse_url(grant.pk), {"nonce": "undo-2", "reason": "x"},
                                format="json")  # fmt: skip
    assert other.status_code == 409
    assert other.json()["code"] == "already_reversed"
    assert other.json()["reversal_id"] == reversal["id"]
    # The history shows both links.
    page = alice_client.get("/api/content/ledger/alice/entries/").json()["results"]
    by_id = {e["id"]: e for e in page}
    assert by_id[grant.pk]["reversed_by"] == reversal["id"]
    assert (
        by_id[reversal["id"]]["reverses"] == grant.pk
        and by_id[reversal["id"]]["reversed_by"] is None
    )


@pytest.mark.parametrize("case", ["reversal", "zero"])
def test_not_reversible(manager_client, case):
    grant = fund("alice", 3)
    if case == "reversal":
        target = entry_reverse(entry_id=grant.pk, app="content", actor=MANAGER, nonce="r1",
                               reason="first").entry  # fmt: skip
    else:
        target = entry_post(owner_id="alice", operation="CONTENT_ACCESS", nonce="look",
                            app="content", actor=MANAGER).entry  # fmt: skip
    response = manager_client.post(reverse_url(target.pk), {"nonce": "r2", "reason": "again"},
                                   format="json")  # fmt: skip
    assert response.status_code == 400 and response.json()["code"] == "not_reversible"


def test_only_managers_and_only_the_apps_own_entries(manager_client, alice_client):
    grant = fund("alice", 3)
    body = {"nonce": "u", "reason": "no"}
    assert alice_client.post(reverse_url(grant.pk), body, format="json").status_code == 403
    assert manager_client.post(reverse_url(grant.pk, "rewards"), body,
                               format="json").status_code == 404  # fmt: skip
    assert manager_client.post(reverse_url(10**12), body, format="json").status_code == 404
    response = manager_client.post(reverse_url(grant.pk), {"nonce": "u"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert not LedgerEntry.objects.filter(operation="REVERSAL").exists()


def test_reversal_never_overdraws(manager_client):
    grant = fund("alice", 5)
    entry_post(owner_id="alice", operation="CREDIT_SPEND", nonce="s", app="content",
               actor=MANAGER, amount=-4)  # fmt: skip
    response = manager_client.post(reverse_url(grant.pk), {"nonce": "u", "reason": "late"},
                                   format="json")  # fmt: skip
    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_balance"
    assert Balance.objects.get(owner_id="alice").balance == 1


def test_reversing_a_spend_gives_the_credits_back():
    fund("alice", 5)
    spend = entry_post(owner_id="alice", operation="CREDIT_SPEND", nonce="s", app="content",
                       actor=MANAGER, amount=-2).entry  # fmt: skip
    result = entry_reverse(entry_id=spend.pk, app="content", actor=MANAGER, nonce="u",
                           reason="refund")  # fmt: skip
    assert result.entry.amount == 2 and result.entry.balance_after == 5


def test_generic_post_refuses_reversal(manager_client):
    response = manager_client.post(
        "/api/content/ledger/",
        {"owner_id": "alice", "operation": "REVERSAL", "nonce": "x", "amount": 5},
        format="json",
    )
    assert response.status_code == 400 and "REVERSAL" not in response.json()["allowed"]


def test_a_reversed_daily_reward_still_counts_for_its_limit(alice_client, manager_client):
    claim = {"owner_id": "alice", "operation": "DAILY_REWARD", "nonce": "d1"}
    claimed = alice_client.post("/api/content/ledger/", claim, format="json").json()
    assert manager_client.post(reverse_url(claimed["id"]), {"nonce": "u", "reason": "test"},
                               format="json").status_code == 201  # fmt: skip
    again = alice_client.post("/api/content/ledger/", {**claim, "nonce": "d2"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "limit_reached"


@pytest.mark.django_db(transaction=True)
def test_racing_reversals_make_exactly_one():
    grant = fund("alice", 10)

    def work(i: int):
        try:
            return entry_reverse(entry_id=grant.pk, app="content", actor=MANAGER,
                                 nonce=f"race-{i}", reason="race").entry.pk  # fmt: skip
        except (AlreadyReversed, InsufficientBalance) as exc:
            return exc.code
        except Exception as exc:  # noqa: BLE001 - nonce_in_flight is a retryable answer
            return getattr(exc, "code", repr(exc))

    results = run_concurrently(8, work)
    made = [r for r in results if isinstance(r, int)]
    assert len(made) == 1, results
    assert set(results) - set(made) <= {"already_reversed", "nonce_in_flight"}
    assert LedgerEntry.objects.filter(reverses=grant.pk).count() == 1
    assert Balance.objects.get(owner_id="alice").balance == 0
