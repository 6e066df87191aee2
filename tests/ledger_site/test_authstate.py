"""Writes authenticate from the Redis auth-state cache, and every change to a
user, its groups or its permissions reaches the next write at once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import override_settings
from rest_framework_simplejwt.tokens import AccessToken

from ledger_site import ratelimit
from ledger_site.authstate import LOOKUPS, STATE_PREFIX, auth_states
from tests.conftest import bearer_client, fund
from tests.factories import UserFactory
from tests.ledger_core.test_cache import dead_redis_caches

pytestmark = pytest.mark.django_db

CONTENT = "/api/content/ledger/"


def grant(client, nonce: str, owner: str = "bob"):
    return client.post(
        CONTENT,
        {"owner_id": owner, "operation": "CREDIT_ADD", "amount": 1, "nonce": nonce},
        format="json",
    )


def spend(client, nonce: str, owner: str = "alice"):
    return client.post(
        CONTENT, {"owner_id": owner, "operation": "CREDIT_SPEND", "nonce": nonce}, format="json"
    )


def lookups(result: str) -> float:
    return LOOKUPS.labels(result)._value.get()


def test_second_write_costs_no_user_query(django_assert_num_queries):
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    hits, misses = lookups("hit"), lookups("miss")
    assert grant(client, "n1").status_code == 201  # miss: user query, then cached
    # savepoint + post statement + release inside the test transaction; no user query
    with django_assert_num_queries(3):
        assert grant(client, "n2").status_code == 201
    assert (lookups("hit") - hits, lookups("miss") - misses) == (1, 1)


def test_deactivation_stops_the_next_write():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.is_active = False
    alice.save()
    response = spend(client, "n2")
    assert response.status_code == 401, response.content


def test_deleted_user_cannot_write():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.delete()
    assert spend(client, "n2").status_code == 401


def test_rename_reaches_the_next_write():
    # The ledger of a user is its username: a renamed user posts to its new name only.
    alice = UserFactory(username="alice")
    fund("alice", 5)
    fund("alicia", 5)
    client = bearer_client(alice)
    assert spend(client, "n1").status_code == 201
    alice.username = "alicia"
    alice.save()
    assert spend(client, "n2", owner="alice").status_code == 403
    assert spend(client, "n3", owner="alicia").status_code == 201


def test_group_permission_revoked_reaches_every_member():
    managers = Group.objects.create(name="managers")
    post_any = Permission.objects.get(codename="post_any_entry")
    managers.permissions.add(post_any)
    users = [UserFactory(username=f"m{i}") for i in range(2)]
    for user in users:
        user.groups.add(managers)
    clients = [bearer_client(user) for user in users]
    for i, client in enumerate(clients):
        assert grant(client, f"a{i}").status_code == 201
    managers.permissions.remove(post_any)  # changes no user row: a global invalidation
    for i, client in enumerate(clients):
        assert grant(client, f"b{i}").status_code == 403


def test_group_deleted_and_membership_removed_from_the_group_side():
    managers = Group.objects.create(name="managers")
    managers.permissions.add(Permission.objects.get(codename="post_any_entry"))
    boss = UserFactory(username="boss")
    boss.groups.add(managers)
    client = bearer_client(boss)
    assert grant(client, "n1").status_code == 201
    managers.user_set.remove(boss)  # reverse side of the membership
    assert grant(client, "n2").status_code == 403
    managers.user_set.add(boss)
    assert grant(client, "n3").status_code == 201
    managers.delete()
    assert grant(client, "n4").status_code == 403


def test_a_fill_that_raced_with_a_change_is_not_stored():
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    from ledger_site.jwt import _state_of

    stale = _state_of(boss)
    lookup = auth_states.lookup(boss.pk)  # a write misses and reads the database ...
    assert lookup.state is None
    auth_states.invalidate_user(boss.pk)  # ... while the user changes and commits
    auth_states.fill(boss.pk, lookup.ticket, stale)  # then the stale fill arrives
    assert auth_states.lookup(boss.pk).state is None
    # Without the change in between, the fill is stored.
    lookup = auth_states.lookup(boss.pk)
    auth_states.fill(boss.pk, lookup.ticket, stale)
    assert auth_states.lookup(boss.pk).state == stale


def test_global_generation_outdates_every_cached_state():
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    assert grant(bearer_client(boss), "n1").status_code == 201
    assert auth_states.lookup(boss.pk).state is not None
    auth_states.invalidate_all()
    assert auth_states.lookup(boss.pk).state is None


def test_redis_down_writes_authenticate_from_the_database():
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    errors = lookups("error")
    ratelimit_errors = ratelimit.ERRORS._value.get()
    with override_settings(CACHES=dead_redis_caches()):
        assert grant(client, "n1").status_code == 201
        boss.user_permissions.clear()  # the invalidation is lost: Redis is gone
        assert grant(client, "n2").status_code == 403  # the database said so
    assert auth_states.circuit.tripped
    assert lookups("error") - errors == 2
    # Rate limiting failed open, each request counted once as an error.
    assert ratelimit.ERRORS._value.get() - ratelimit_errors == 2


def test_invalidation_lost_to_an_outage_is_replayed_on_recovery():
    from django_redis import get_redis_connection

    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    assert grant(client, "n1").status_code == 201  # cached with post_any
    with override_settings(CACHES=dead_redis_caches()):
        boss.user_permissions.clear()  # both invalidations fail
    # Redis answers again; the stale entry is still there ...
    key = get_redis_connection("default").keys(f"*{STATE_PREFIX}{boss.pk}")
    assert key, "the state cached before the outage"
    auth_states.circuit.until = time.monotonic() - 1  # the breaker's wait is over
    # ... but the first use replays the lost invalidation before trusting the cache.
    assert grant(client, "n2").status_code == 403
    assert not auth_states.circuit.tripped


def test_cached_token_is_refused_once_expired():
    alice = UserFactory(username="alice")
    fund("alice", 5)
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=1))
    client = bearer_client(alice)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert spend(client, "n1").status_code == 201  # validated and cached
    time.sleep(1.1)
    response = spend(client, "n2")
    assert response.status_code == 401
    # The same answer as for an expired token this process never saw.
    never_seen = AccessToken.for_user(alice)
    never_seen.set_exp(lifetime=-timedelta(seconds=1))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {never_seen}")
    expected = spend(client, "n3")
    assert expected.status_code == 401
    assert response.json() == expected.json()


@pytest.mark.django_db(transaction=True)
def test_write_is_two_redis_round_trips(redis_round_trips, settings):
    # Rate-limit count + cached auth state in one; the balance cache write in the other.
    settings.LEDGER_BALANCE_CACHE = True
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    assert grant(client, "n1").status_code == 201  # fills the auth-state cache
    before = redis_round_trips["n"]
    assert grant(client, "n2").status_code == 201
    assert redis_round_trips["n"] - before == 2


@override_settings(RATE_LIMIT_LEDGER_WRITE="2/m")
def test_counted_once_when_counted_with_the_auth_state():
    boss = UserFactory(username="boss", perms=["ledger_core.post_any_entry"])
    client = bearer_client(boss)
    assert grant(client, "n1").status_code == 201
    assert grant(client, "n2").status_code == 201
    assert grant(client, "n3").status_code == 429
