"""The balance cache on real Redis: no SQL on a hit, read-your-writes under
concurrency, versioned compare-and-set, and graceful loss of Redis."""

from __future__ import annotations

import logging
import random
import threading

import pytest
from django.core.cache import caches
from django.test import override_settings
from django_redis.cache import RedisCache

from ledger_core import metrics
from ledger_core.actors import Actor
from ledger_core.cache import BalanceCache, balance_cache
from ledger_core.selectors import balance_get, balance_get_uncached
from ledger_core.services import entry_post
from ledger_core.types import BalanceView
from tests.conftest import bearer_client, fund
from tests.factories import UserFactory
from tests.ledger_core.test_concurrency import run_concurrently
from tests.livehelpers import free_port

pytestmark = [pytest.mark.django_db(transaction=True)]

MANAGER = Actor(name="manager", owner_id="manager", can_post_any=True)


def cache_count(result: str) -> float:
    return metrics.BALANCE_CACHE.labels(result)._value.get()


def test_suite_runs_the_cache_on_redis():
    assert isinstance(caches["default"], RedisCache)
    assert isinstance(caches["ratelimit"], RedisCache)


def test_cache_hit_costs_no_sql_query(django_assert_num_queries):
    user = UserFactory(username="alice")
    client = bearer_client(user)
    fund("alice", 9)  # the post's on_commit fills the cache
    with django_assert_num_queries(0):
        response = client.get("/api/content/ledger/alice/")
    assert response.status_code == 200
    assert response.json()["balance"] == 9 and response.json()["version"] == 1


def test_miss_reads_database_once_then_hits(django_assert_num_queries):
    user = UserFactory(username="alice")
    client = bearer_client(user)
    fund("alice", 4)
    caches["default"].clear()
    misses = cache_count("miss")
    with django_assert_num_queries(1):
        assert client.get("/api/content/ledger/alice/").json()["balance"] == 4
    assert cache_count("miss") == misses + 1
    hits = cache_count("hit")
    with django_assert_num_queries(0):
        assert client.get("/api/rewards/ledger/alice/").json()["balance"] == 4
    assert cache_count("hit") == hits + 1


def test_post_updates_cached_balance():
    fund("alice", 10)
    assert balance_get(owner_id="alice").balance == 10
    entry_post(
        owner_id="alice",
        operation="CREDIT_SPEND",
        nonce="s",
        app="content",
        actor=Actor(name="alice", owner_id="alice"),
    )
    cached = balance_cache.get("alice")
    assert (cached.balance, cached.version) == (9, 2)


def test_older_balance_never_overwrites_newer():
    newer = BalanceView(owner_id="alice", balance=7, version=5, updated_at=None)
    older = BalanceView(owner_id="alice", balance=99, version=4, updated_at=None)
    assert balance_cache.offer(newer)
    assert not balance_cache.offer(older)
    assert not balance_cache.offer(newer)  # same version: nothing to do
    assert balance_cache.get("alice").balance == 7


def test_concurrent_offers_keep_the_highest_version():
    versions = list(range(1, 201))
    random.Random(7).shuffle(versions)
    chunks = [versions[i::8] for i in range(8)]

    def offer_all(i: int):
        for v in chunks[i]:
            balance_cache.offer(
                BalanceView(owner_id="race", balance=v * 10, version=v, updated_at=None)
            )

    results = run_concurrently(8, offer_all)
    assert not [r for r in results if isinstance(r, Exception)]
    final = balance_cache.get("race")
    assert (final.version, final.balance) == (200, 2000)


def test_read_your_writes_with_interleaved_posts_and_reads():
    """Once any post has returned version V, no read that starts later sees < V."""
    owner = "shared"
    fund(owner, 1)
    acknowledged = {"version": 1}
    ack_lock = threading.Lock()
    violations: list[str] = []
    writers, readers, posts_each, reads_each = 4, 6, 15, 60

    def writer(i: int):
        for j in range(posts_each):
            result = entry_post(
                owner_id=owner,
                operation="CREDIT_ADD",
                nonce=f"w{i}-{j}",
                app="content",
                actor=MANAGER,
                amount=1,
            )
            version = balance_get_uncached(owner_id=owner).version
            assert version >= 1 and result.entry.balance_after >= 1
            with ack_lock:
                acknowledged["version"] = max(acknowledged["version"], result.entry.balance_after)

    def reader(i: int):
        # balance == version here (every entry is +1 starting from one +1 entry)
        for _ in range(reads_each):
            with ack_lock:
                floor = acknowledged["version"]
            seen = balance_get(owner_id=owner)
            if seen.balance < floor:
                violations.append(f"read {seen.balance} after {floor} was acknowledged")

    def work(i: int):
        return writer(i) if i < writers else reader(i)

    results = run_concurrently(writers + readers, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert violations == []
    final = balance_get(owner_id=owner)
    assert final.balance == 1 + writers * posts_each
    assert final.version == balance_get_uncached(owner_id=owner).version


def test_concurrent_miss_fill_and_posts_never_leave_an_old_balance():
    fund("alice", 1)
    caches["default"].clear()

    def work(i: int):
        if i % 2:
            for _ in range(20):
                balance_cache.offer(balance_get_uncached(owner_id="alice"))
        else:
            for j in range(5):
                entry_post(
                    owner_id="alice",
                    operation="CREDIT_ADD",
                    nonce=f"p{i}-{j}",
                    app="content",
                    actor=MANAGER,
                    amount=1,
                )

    results = run_concurrently(8, work)
    assert not [r for r in results if isinstance(r, Exception)]
    assert balance_cache.get("alice") == balance_get_uncached(owner_id="alice")


def dead_redis_caches() -> dict:
    location = f"redis://127.0.0.1:{free_port()}/0"
    options = {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}
    return {
        alias: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": location,
            "OPTIONS": options,
        }
        for alias in ("default", "ratelimit")
    }


def test_redis_down_reads_fall_back_and_writes_work(caplog):
    fund("alice", 5)
    cache = BalanceCache()
    errors_before = cache_count("error")
    with override_settings(CACHES=dead_redis_caches()), caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert cache.get("alice") is None
        assert balance_get(owner_id="alice").balance == 5
        result = entry_post(
            owner_id="alice",
            operation="CREDIT_ADD",
            nonce="during-outage",
            app="content",
            actor=MANAGER,
            amount=2,
        )
        assert result.entry.balance_after == 7
        assert balance_get(owner_id="alice").balance == 7
    warnings = [r for r in caplog.records if r.name == "ledger_core.cache"]
    assert (
        len([r for r in warnings if "unavailable" in r.getMessage()]) <= 2
    )  # one per cache object
    assert cache_count("error") > errors_before
    balance_cache.reset()


def test_write_lost_during_outage_is_cleared_on_recovery():
    cache = BalanceCache()
    cache.offer(BalanceView(owner_id="alice", balance=1, version=1, updated_at=None))
    with override_settings(CACHES=dead_redis_caches()):
        # The post's cache write fails: the stale version 1 stays in the real Redis.
        assert not cache.offer(BalanceView(owner_id="alice", balance=2, version=2, updated_at=None))
    cache.circuit.until = 0.000001  # the circuit's wait is over
    assert cache.get("alice") is None  # recovery deleted the stale key
    assert "alice" not in cache._lost


def test_reads_inside_a_transaction_never_share_uncommitted_balances():
    from django.db import transaction

    fund("alice", 5)
    assert balance_get(owner_id="alice").balance == 5  # cached: version 1
    with pytest.raises(RuntimeError), transaction.atomic():
        entry_post(
            owner_id="alice", operation="CREDIT_ADD", nonce="rolled-back", app="content",
            actor=MANAGER, amount=100,
        )  # fmt: skip
        # The caller sees its own post...
        assert balance_get(owner_id="alice").balance == 105
        raise RuntimeError("the caller's transaction fails")
    # ...and nobody else ever sees it.
    assert balance_cache.get("alice").balance == 5
    assert balance_get(owner_id="alice").balance == 5
    with transaction.atomic():
        entry_post(
            owner_id="alice", operation="CREDIT_ADD", nonce="kept", app="content",
            actor=MANAGER, amount=1,
        )  # fmt: skip
        assert balance_get(owner_id="alice").balance == 6
    assert balance_cache.get("alice").balance == 6
