"""The event feed: the API, and exactly-once in one fixed order however
transactions commit (real threads, real PostgreSQL connections)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections, transaction

from ledger_core.actors import Actor
from ledger_core.events import Cursor, event_page
from ledger_core.models import HoldEvent, LedgerEntry
from ledger_core.services import (
    EntryRequest,
    entry_post,
    entry_post_batch,
    hold_capture,
    hold_place,
    hold_void,
)
from tests.conftest import SYSTEM, bearer_client, fund
from tests.ledger_core.test_concurrency import run_concurrently

MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)
EVENTS = "/api/events/"


def all_events(**filters) -> list:
    after, seen = Cursor(), []
    while True:
        page, after = event_page(after=after, limit=50, **filters)
        if not page:
            return seen
        seen += page


@pytest.mark.django_db(transaction=True)
def test_feed_api_pages_filters_and_permissions(manager_client, alice_client, auditor,
                                                api_client):  # fmt: skip
    fund("alice", 5)
    fund("bob", 3, app="rewards")
    hold = hold_place(owner_id="alice", operation="CREDIT_SPEND", nonce="h", app="content",
                      actor=MANAGER, amount=-2).hold  # fmt: skip
    hold_void(hold_id=hold.pk, app="content", actor=MANAGER)
    page = bearer_client(auditor).get(EVENTS + "?limit=2").json()
    assert [e["type"] for e in page["events"]] == ["entry.posted", "entry.posted"]
    first = page["events"][0]
    assert set(first) == {"id", "type", "created_at", "app", "owner_id", "data"}
    assert first["data"]["amount"] == 5 and first["data"]["hash"]
    rest = manager_client.get(EVENTS + f"?after={page['next']}").json()
    assert [e["type"] for e in rest["events"]] == ["hold.placed", "hold.voided"]
    assert rest["events"][1]["data"]["status"] == "voided"
    again = manager_client.get(EVENTS + f"?after={rest['next']}").json()
    assert again["events"] == []
    only = manager_client.get(EVENTS + "?app=rewards&type=entry.posted").json()["events"]
    assert [(e["owner_id"], e["app"]) for e in only] == [("bob", "rewards")]
    assert manager_client.get(EVENTS + "?owner_id=bob").json()["events"][0]["data"]["amount"] == 3
    for bad in ("?after=yesterday", "?limit=0", "?limit=1001", "?type=entry.deleted",
                "?wait=31", "?limit=2.0", "?limit=1_0",
                "?limit=%D9%A3", "?wait=%D9%A3", "?app=reward"):  # fmt: skip
        response = manager_client.get(EVENTS + bad)
        assert response.status_code == 400 and response.json()["code"] == "invalid", bad
    assert alice_client.get(EVENTS).status_code == 403
    assert api_client.get(EVENTS).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_long_poll_answers_when_an_event_arrives(manager_client):
    fund("alice", 1)
    after = manager_client.get(EVENTS).json()["next"]
    started = time.monotonic()
    empty = manager_client.get(EVENTS + f"?after={after}&wait=1").json()
    assert empty["events"] == [] and time.monotonic() - started >= 1

    def later():
        time.sleep(0.5)
        try:
            fund("alice", 2, nonce="later")
        finally:
            connections.close_all()

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    page = manager_client.get(EVENTS + f"?after={empty['next']}&wait=10").json()
    thread.join(30)
    assert [e["data"]["nonce"] for e in page["events"]] == ["later"]
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_long_polls_beyond_the_sites_places_answer_at_once(manager_client, settings):
    import psycopg
    from django.db import connection

    from ledger_core.events import _WAIT_LOCK_SPACE

    settings.LEDGER_EVENTS_MAX_WAITING = 2
    fund("alice", 1)
    after = manager_client.get(EVENTS).json()["next"]

    def waited(seconds: int) -> float:
        started = time.monotonic()
        page = manager_client.get(EVENTS + f"?after={after}&wait={seconds}").json()
        assert page["events"] == []
        # The cursor stays, or moves past transactions of other databases of the cluster.
        assert Cursor.parse(page["next"]) >= Cursor.parse(after)
        return time.monotonic() - started

    # Two other workers (other database sessions) are waiting already.
    s = connection.settings_dict
    dsn = f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} user={s['USER']} "
    dsn += f"dbname={s['NAME']}" + (f" password={s['PASSWORD']}" if s["PASSWORD"] else "")
    with (
        psycopg.connect(dsn, autocommit=True) as first,
        psycopg.connect(dsn, autocommit=True) as second,
    ):
        for other, slot in ((first, 0), (second, 1)):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [_WAIT_LOCK_SPACE, slot])
        assert waited(5) < 1
        second.close()  # that worker's connection is gone, and its place with it
        assert waited(1) >= 1
    settings.LEDGER_EVENTS_MAX_WAITING = 0
    assert waited(5) < 1


@pytest.mark.django_db(transaction=True)
def test_a_late_commit_is_not_skipped():
    """A transaction that started (and took its id) first but commits last:
    a plain `id > cursor` feed would hand out the later one and never the
    late one; the watermark holds the later one back until it commits."""
    fund("alice", 10)
    start = all_events()
    cursor = start[-1].position
    entered, release = threading.Event(), threading.Event()

    def slow_poster():
        try:
            with transaction.atomic():
                entry_post(owner_id="bob", operation="CREDIT_ADD", nonce="late", app="content",
                           actor=SYSTEM, amount=1)  # fmt: skip
                entered.set()
                assert release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_poster)
    thread.start()
    assert entered.wait(30)
    fund("alice", 1, nonce="quick")  # committed, but after the slow one took its id
    page, held_at = event_page(after=cursor, limit=100)
    assert page == []  # nothing handed out past the open transaction
    release.set()
    thread.join(30)
    page, _ = event_page(after=held_at, limit=100)
    assert [e.data.nonce for e in page] == ["late", "quick"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_pages_read_while_8_posters_write_give_every_event_once():
    for owner in ("p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"):
        fund(owner, 5000)
    start = all_events()[-1].position
    done = threading.Event()

    def poster(i: int):
        owner = f"p{i}"
        if i < 4:  # batches: most of the events
            for n in range(40):
                entry_post_batch(app="content", actor=SYSTEM, entries=[
                    EntryRequest(owner_id=owner, operation="CREDIT_ADD", nonce=f"b{n}-{k}",
                                 amount=1)
                    for k in range(110)
                ])  # fmt: skip
        elif i < 6:
            for n in range(500):
                entry_post(owner_id=owner, operation="CREDIT_SPEND", nonce=f"s{n}",
                           app="content", actor=MANAGER)  # fmt: skip
        else:
            for n in range(250):
                hold = hold_place(
                    owner_id=owner,
                    operation="CREDIT_SPEND",
                    nonce=f"h{n}",
                    app="content",
                    actor=MANAGER,
                ).hold
                hold_capture(hold_id=hold.pk, app="content", actor=MANAGER)  # fmt: skip
        return i

    seen: list[str] = []

    def consumer():
        after = start
        try:
            while True:
                finished = done.is_set()
                page, after = event_page(after=after, limit=500)
                seen.extend(e.id for e in page)
                if finished and not page:
                    return
                if not page:
                    time.sleep(0.05)
        finally:
            connections.close_all()

    reader = threading.Thread(target=consumer)
    reader.start()
    results = run_concurrently(8, poster)
    assert results == list(range(8)), results
    done.set()
    reader.join(120)
    assert not reader.is_alive()
    committed = [e.id for e in all_events()]
    expected = [e for e in committed if Cursor.parse(e) > start]
    assert len(seen) == len(set(seen)), "an event was handed out twice"
    assert seen == expected  # every committed event, once, in the feed's one order
    assert len(seen) >= 20_000
    entries = LedgerEntry.objects.filter(owner_id__startswith="p").count() - 8
    assert len(seen) == entries + HoldEvent.objects.count()


def ahead_of_the_feed() -> Cursor:
    """A cursor naming a transaction this database has not started yet."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        return Cursor(cursor.fetchone()[0] + 1000, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_cursor_ahead_of_the_feed_is_refused_not_waited_on(manager_client):
    """One this database did not hand out (mangled, or kept across a restore of
    the database to an earlier state): reading on from it would wait for ever
    and then skip every event stored before the feed caught up with it."""
    fund("alice", 1)
    ahead = ahead_of_the_feed()
    started = time.monotonic()
    response = manager_client.get(EVENTS + f"?after={ahead}&wait=5")
    assert response.status_code == 400 and time.monotonic() - started < 2
    assert response.json()["code"] == "invalid" and "ahead" in response.json()["errors"]["after"][0]
    # Every cursor the feed hands out is accepted, also once nothing happened since.
    follow = manager_client.get(EVENTS).json()["next"]
    for _ in range(2):
        follow = manager_client.get(EVENTS + f"?after={follow}").json()["next"]
    assert Cursor.parse(follow) < ahead
