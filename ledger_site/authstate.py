"""What a write needs to know about its user, cached in Redis and invalidated on change.

Design decision: a request that moves credits must see a deactivation or a
revoked manager permission at once, so writes cannot trust the token's claims
the way reads do (see ``ledger_site.jwt``). Reading the user and its ledger
permissions from PostgreSQL on every write was a third of a post's cost, so
that state (username, active/staff/superuser flags, ledger permission
codenames) is cached in Redis, on the ``default`` cache alias, and every change
to it deletes it:

- saving or deleting a user, or changing its permissions or groups,
  invalidates that user; changing a group's permissions, or deleting a group
  or a permission, invalidates every user (a global generation);
- invalidation runs at once and again when the changing transaction commits;
- a miss reads PostgreSQL and fills the cache with a compare-and-set on
  generation counters read *before* the query, so a fill that raced with a
  change can never store the state from before it.

Limits, by design: a change made without Django's signals (``QuerySet.update``
on users, raw SQL) reaches writes when the entry expires
(``LEDGER_AUTH_CACHE_TTL``, 60 s by default) or when ``invalidate_user`` is
called. If Redis cannot be reached, writes read PostgreSQL as before (the
breaker in ``ledger_core.circuit`` keeps a dead Redis from slowing them); an
invalidation lost to a Redis fault is retried when Redis answers again, and
the TTL bounds anything beyond that. Without Redis (``make run``) nothing is
cached.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from prometheus_client import Counter

from ledger_core.cache import redis_client, run_script
from ledger_core.circuit import Circuit

logger = logging.getLogger("ledger_site.authstate")

LOOKUPS = Counter(
    "ledger_auth_cache",
    "Auth-state look-ups of writes: hit, miss (read from the database), error (Redis "
    "unreachable, read from the database).",
    ["result"],
)

CACHE_ALIAS = "default"
STATE_PREFIX = "auth:v1:state:"
GEN_PREFIX = "auth:v1:gen:"
GLOBAL = "*"
MAX_LOST = 10_000

# KEYS: state, user generation, global generation.
# ARGV: the generations read before the database query, the state, its TTL.
_FILL_SCRIPT = """
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1]
   and (redis.call('GET', KEYS[3]) or '0') == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[4]))
  return 1
end
return 0
"""
# KEYS: generation, state (absent for the global generation). ARGV: generation TTL.
_INVALIDATE_SCRIPT = """
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 1
"""


@dataclass(frozen=True)
class AuthState:
    username: str
    is_active: bool
    is_staff: bool
    is_superuser: bool
    codenames: tuple[str, ...]

    def encode(self, global_gen: str) -> str:
        return json.dumps(
            [global_gen, self.username, self.is_active, self.is_staff, self.is_superuser,
             list(self.codenames)],
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def decode(cls, raw: str | bytes, global_gen: str) -> AuthState | None:
        """The state, or None if it is malformed or from an older global generation."""
        try:
            stored_gen, username, active, staff, superuser, codenames = json.loads(raw)
        except (ValueError, TypeError):
            return None
        if stored_gen != global_gen:
            return None
        return cls(str(username), bool(active), bool(staff), bool(superuser), tuple(codenames))


@dataclass(frozen=True)
class Lookup:
    """A cache look-up: the state on a hit; on a miss, the ticket a fill needs."""

    state: AuthState | None
    ticket: tuple[str, str] | None  # (user generation, global generation) before the query


class AuthStateCache:
    def __init__(self, alias: str = CACHE_ALIAS) -> None:
        self.alias = alias
        self.circuit = Circuit(
            "auth-state cache", logger, "authenticating writes from the database until it answers"
        )
        self._lock = threading.Lock()
        self._lost: dict[str, None] = {}

    # -- plumbing ------------------------------------------------------------
    def _client(self) -> Any | None:
        if not getattr(settings, "LEDGER_AUTH_CACHE", True):
            return None
        return redis_client(caches[self.alias])

    def _key(self, prefix: str, name: str) -> str:
        return caches[self.alias].make_key(prefix + name)

    def _names(self, user_id: Any) -> list[tuple[str, str]]:
        """``(cache alias, key)`` of a user's state and of the user and global generations."""
        uid = str(user_id)
        return [
            (self.alias, STATE_PREFIX + uid),
            (self.alias, GEN_PREFIX + uid),
            (self.alias, GEN_PREFIX + GLOBAL),
        ]

    def _ttl(self) -> int:
        return int(getattr(settings, "LEDGER_AUTH_CACHE_TTL", 60))

    def _usable(self) -> Any | None:
        """The Redis client if the cache is on and answering, else None."""
        client = self._client()
        if client is None or self.circuit.is_open():
            return None
        if self.circuit.tripped and not self._recover(client):
            return None
        return client

    def _recover(self, client: Any) -> bool:
        with self._lock:
            lost = list(self._lost)
        try:
            for name in lost:
                self._invalidate(client, name)
            if not lost:
                client.ping()
        except Exception as exc:  # noqa: BLE001 - still down: stay open
            self.circuit.trip(exc, "recovery")
            return False
        with self._lock:
            for name in lost:
                self._lost.pop(name, None)
        self.circuit.reset(f" ({len(lost)} lost invalidations replayed)")
        return True

    # -- API -----------------------------------------------------------------
    def fetch_keys(self, user_id: Any) -> list[tuple[str, str]]:
        """``(cache alias, key)`` pairs ``lookup`` reads, for a caller that reads
        them ahead in a round trip of its own (the rate limiter does)."""
        if self._client() is None or self.circuit.tripped:
            return []
        return self._names(user_id)

    def lookup(self, user_id: Any, prefetched: Mapping | None = None) -> Lookup:
        """The cached state of ``user_id``, or a miss: from ``prefetched`` (the
        values of ``fetch_keys`` read earlier in this request) or one round trip."""
        client = self._usable()
        if client is None:
            if self.circuit.tripped:  # Redis is down: the database answers
                LOOKUPS.labels("error").inc()
            return Lookup(None, None)
        names = self._names(user_id)
        try:
            if prefetched is not None and all(name in prefetched for name in names):
                raw, user_gen, global_gen = (prefetched[name] for name in names)
            else:
                raw, user_gen, global_gen = client.mget(
                    [caches[self.alias].make_key(key) for _alias, key in names]
                )
        except Exception as exc:  # noqa: BLE001 - any cache failure: ask the database
            LOOKUPS.labels("error").inc()
            self.circuit.trip(exc, "get")
            return Lookup(None, None)
        user_gen = (user_gen or b"0").decode()
        global_gen = (global_gen or b"0").decode()
        state = AuthState.decode(raw, global_gen) if raw is not None else None
        LOOKUPS.labels("hit" if state is not None else "miss").inc()
        return Lookup(state, None if state is not None else (user_gen, global_gen))

    def fill(self, user_id: Any, ticket: tuple[str, str] | None, state: AuthState) -> None:
        """Store ``state`` read from the database after ``lookup`` gave ``ticket``,
        unless the user (or every user) was invalidated since."""
        client = self._usable() if ticket is not None else None
        if client is None:
            return
        user_gen, global_gen = ticket
        try:
            run_script(
                client,
                _FILL_SCRIPT,
                [caches[self.alias].make_key(key) for _alias, key in self._names(user_id)],
                [user_gen, global_gen, state.encode(global_gen), self._ttl()],
            )
        except Exception as exc:  # noqa: BLE001 - a lost fill costs a query later
            self.circuit.trip(exc, "set")

    def invalidate_user(self, user_id: Any) -> None:
        """Forget one user's state (and make in-flight fills for it fail)."""
        self._invalidate_safely(str(user_id))

    def invalidate_all(self) -> None:
        """Forget every user's state (group or permission definitions changed)."""
        self._invalidate_safely(GLOBAL)

    def _invalidate_safely(self, name: str) -> None:
        client = self._client()
        if client is None:
            return
        if not self.circuit.is_open():
            try:
                self._invalidate(client, name)
                return
            except Exception as exc:  # noqa: BLE001 - replayed when Redis answers again
                self.circuit.trip(exc, "invalidate")
        with self._lock:
            self._lost[name if len(self._lost) < MAX_LOST else GLOBAL] = None

    def _invalidate(self, client: Any, name: str) -> None:
        keys = [self._key(GEN_PREFIX, name)]
        if name != GLOBAL:
            keys.append(self._key(STATE_PREFIX, name))
        # Generations outlive every state filled under them (see the module doc).
        run_script(client, _INVALIDATE_SCRIPT, keys, [max(3600, 10 * self._ttl())])

    def reset(self) -> None:
        """Forget the circuit state and lost invalidations (tests)."""
        self.circuit.until = 0.0
        with self._lock:
            self._lost.clear()


auth_states = AuthStateCache()


def _now_and_on_commit(using: str | None, invalidate: Any) -> None:
    # Now, so that no request inside the changing transaction's lifetime is
    # served the old state from the cache; and after commit, to drop a fill
    # that read the database before the change became visible.
    invalidate()
    transaction.on_commit(invalidate, using=using)


def connect_signals() -> None:
    """Invalidate cached auth state whenever users, groups or permissions change.

    The receivers are closures, so they are connected with ``weak=False``."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save

    User = get_user_model()

    def user_changed(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
        _now_and_on_commit(using, lambda: auth_states.invalidate_user(instance.pk))

    def definitions_changed(sender: Any, using: str | None = None, **kwargs: Any) -> None:
        _now_and_on_commit(using, auth_states.invalidate_all)

    def membership_changed(
        sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
        using: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        if not action.startswith("post_"):
            return
        if not reverse:
            user_changed(sender, instance, using)
        elif pk_set:
            for pk in pk_set:
                _now_and_on_commit(using, lambda pk=pk: auth_states.invalidate_user(pk))
        else:  # cleared from the permission's or group's side: who is unknown
            definitions_changed(sender, using)

    uid = "ledger_site.authstate"
    post_save.connect(user_changed, sender=User, weak=False, dispatch_uid=f"{uid}.user_saved")
    post_delete.connect(user_changed, sender=User, weak=False, dispatch_uid=f"{uid}.user_del")
    for through in (User.user_permissions.through, User.groups.through):
        m2m_changed.connect(
            membership_changed, sender=through, weak=False, dispatch_uid=f"{uid}.{through}"
        )
    m2m_changed.connect(
        definitions_changed,
        sender=Group.permissions.through,
        weak=False,
        dispatch_uid=f"{uid}.group_perms",
    )
    for model in (Group, Permission):
        post_delete.connect(
            definitions_changed, sender=model, weak=False, dispatch_uid=f"{uid}.{model}_del"
        )
    post_save.connect(
        definitions_changed, sender=Permission, weak=False, dispatch_uid=f"{uid}.perm_saved"
    )
