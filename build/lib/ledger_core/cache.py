"""The balance cache: read-your-writes on top of a shared cache (Redis).

Design decision: the cache maps an owner to ``(version, balance, updated_at)``
where ``version`` is ``Balance.version`` (entries applied). Two writers fill
it: a post's ``on_commit`` callback (the balance the post produced) and a read
that missed (the balance it just read from the database). Both go through one
compare-and-set that keeps whichever value has the higher version, atomically
in Redis (a Lua script), so a slow writer holding an older balance can never
overwrite a newer one, whatever order the writes land in. A post's
``on_commit`` write finishes before the post's response is sent, so once a
client has seen ``balance_after = X``, every later read returns a version at
least as new as X.

Faults: every cache call is guarded. An error (Redis gone, timeout) counts in
``ledger_balance_cache_total{result="error"}``, logs one warning, and opens a
short circuit (``ledger_core.circuit``) during which this process skips the cache (reads go to the
database; nothing hangs on a dead socket). Owners whose cache write was lost
in that time are remembered and their keys deleted when the cache answers
again; the TTL (``LEDGER_BALANCE_CACHE_TTL``) bounds anything beyond that.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from django.core.cache import caches

from . import metrics
from .circuit import Circuit
from .conf import ledger_settings
from .types import BalanceView

logger = logging.getLogger("ledger_core.cache")

CACHE_ALIAS = "default"
KEY_PREFIX = "balance:v1:"
MAX_LOST_WRITES = 10_000

# KEYS[1] = key; ARGV = new version, encoded value, ttl seconds.
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^(%d+):'))
  if version and version >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""


_scripts: dict[str, object] = {}


def run_script(client, source: str, keys: list, args: list):
    """Run the Lua ``source`` on ``client`` (a redis-py client or pipeline) as
    one EVALSHA; redis-py loads it first on a server that does not know it."""
    script = _scripts.get(source)
    if script is None:
        from redis.commands.core import Script

        # The client given here only supplies the encoder for the script's SHA.
        script = _scripts[source] = Script(client, source)
    return script(keys=keys, args=args, client=client)


def redis_client(cache) -> object | None:
    """The redis-py client behind a django-redis cache, or None for any other cache.

    Remembered on the cache object (Django builds one per thread and alias,
    and new ones when CACHES changes), so the hot path does not redo the
    look-up on every call."""
    try:
        return cache._ledger_redis_client
    except AttributeError:
        pass
    try:
        from django_redis.cache import RedisCache
    except ImportError:  # pragma: no cover - django-redis is a dependency
        RedisCache = ()  # noqa: N806
    client = cache.client.get_client(write=True) if isinstance(cache, RedisCache) else None
    cache._ledger_redis_client = client
    return client


def _encode(view: BalanceView) -> str:
    stamp = "" if view.updated_at is None else str(int(view.updated_at.timestamp() * 1_000_000))
    return f"{view.version}:{view.balance}:{stamp}"


def _decode(owner_id: str, raw: str | bytes) -> BalanceView | None:
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        version, balance, stamp = raw.split(":", 2)
        updated_at = datetime.fromtimestamp(int(stamp) / 1_000_000, tz=UTC) if stamp else None
        return BalanceView(
            owner_id=owner_id, balance=int(balance), version=int(version), updated_at=updated_at
        )
    except ValueError:
        return None


class BalanceCache:
    """Versioned balance cache with compare-and-set writes and a circuit breaker."""

    def __init__(self, alias: str = CACHE_ALIAS) -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self.circuit = Circuit(
            "balance cache", logger, "serving balances from the database until it answers again"
        )
        self._lost: dict[str, None] = {}
        self._lost_overflow = False

    # -- plumbing ----------------------------------------------------------
    @property
    def cache(self):
        return caches[self.alias]

    def _redis(self):
        return redis_client(self.cache)

    def _key(self, owner_id: str) -> str:
        return self.cache.make_key(KEY_PREFIX + owner_id)

    def _ttl(self) -> int:
        return int(ledger_settings.BALANCE_CACHE_TTL)

    def _available(self) -> bool:
        if not ledger_settings.BALANCE_CACHE:
            return False
        if self.circuit.is_open():
            return False
        return self._recover() if self.circuit.tripped else True

    def _fail(self, action: str, exc: Exception, owner_id: str | None = None) -> None:
        metrics.BALANCE_CACHE.labels("error").inc()
        if owner_id is not None:
            with self._lock:
                self._remember_lost(owner_id)
        self.circuit.trip(exc, action)

    def _remember_lost(self, owner_id: str) -> None:
        if len(self._lost) < MAX_LOST_WRITES:
            self._lost[owner_id] = None
        else:
            self._lost_overflow = True

    def _recover(self) -> bool:
        """The circuit's wait is over: clear keys whose writes were lost, or fail again."""
        with self._lock:
            lost = list(self._lost)
            overflow = self._lost_overflow
        try:
            if lost:
                self.cache.delete_many([KEY_PREFIX + owner for owner in lost])
            else:
                self.cache.get(KEY_PREFIX + "__ping__")
        except Exception as exc:  # noqa: BLE001 - any cache failure keeps the circuit open
            metrics.BALANCE_CACHE.labels("error").inc()
            self.circuit.trip(exc, "recovery")
            return False
        with self._lock:
            for owner in lost:
                self._lost.pop(owner, None)
            self._lost_overflow = False
        if overflow:
            logger.error(
                "balance cache recovered but more than %d writes were lost; cached balances "
                "may lag for up to LEDGER_BALANCE_CACHE_TTL seconds",
                MAX_LOST_WRITES,
            )
        self.circuit.reset(f" ({len(lost)} stale keys cleared)")
        return True

    # -- API -----------------------------------------------------------------
    def get(self, owner_id: str) -> BalanceView | None:
        """The cached balance of ``owner_id``, or None on a miss or a cache fault."""
        if not self._available():
            return None
        try:
            if (client := self._redis()) is not None:
                raw = client.get(self._key(owner_id))
            else:
                raw = self.cache.get(KEY_PREFIX + owner_id)
        except Exception as exc:  # noqa: BLE001 - any cache failure falls back to the DB
            self._fail("get", exc)
            return None
        view = _decode(owner_id, raw) if raw is not None else None
        metrics.BALANCE_CACHE.labels("hit" if view is not None else "miss").inc()
        return view

    def offer(self, view: BalanceView) -> bool:
        """Store ``view`` unless the cache already holds the same or a newer version."""
        if not ledger_settings.BALANCE_CACHE:
            return False
        if not self._available():
            with self._lock:
                self._remember_lost(view.owner_id)
            return False
        try:
            client = self._redis()
            if client is not None:
                return bool(self._cas(client, view))
            return self._cas_local(view)
        except Exception as exc:  # noqa: BLE001 - a lost write is remembered, not raised
            self._fail("set", exc, owner_id=view.owner_id)
            return False

    def offer_many(self, views: list[BalanceView]) -> None:
        """``offer`` for many owners at once (one pipelined round trip on Redis)."""
        if not views or not ledger_settings.BALANCE_CACHE:
            return
        if not self._available():
            with self._lock:
                for view in views:
                    self._remember_lost(view.owner_id)
            return
        try:
            client = self._redis()
            if client is None:
                for view in views:
                    self._cas_local(view)
                return
            ttl = self._ttl()
            for start in range(0, len(views), 1000):
                pipe = client.pipeline(transaction=False)
                for view in views[start : start + 1000]:
                    run_script(
                        pipe,
                        _CAS_SCRIPT,
                        [self._key(view.owner_id)],
                        [view.version, _encode(view), ttl],
                    )
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 - lost writes are remembered, not raised
            self._fail("set", exc)
            with self._lock:
                for view in views:
                    self._remember_lost(view.owner_id)

    def _cas(self, client, view: BalanceView) -> int:
        return run_script(
            client,
            _CAS_SCRIPT,
            [self._key(view.owner_id)],
            [view.version, _encode(view), self._ttl()],
        )

    def _cas_local(self, view: BalanceView) -> bool:
        # In-process caches (locmem) live in this process only: a lock makes
        # the compare-and-set atomic for every thread that can see them.
        key = KEY_PREFIX + view.owner_id
        with self._lock:
            raw = self.cache.get(key)
            current = _decode(view.owner_id, raw) if raw is not None else None
            if current is not None and current.version >= view.version:
                return False
            self.cache.set(key, _encode(view), self._ttl())
            return True

    def reset(self) -> None:
        """Forget the circuit state (tests)."""
        self.circuit.until = 0.0
        with self._lock:
            self._lost.clear()
            self._lost_overflow = False


balance_cache = BalanceCache()
