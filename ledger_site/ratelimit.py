"""Rate limits: django-ratelimit counters in the shared cache, checked after authentication.

Design decision: django-ratelimit's decorator runs before DRF authenticates a
JWT request, when ``request.user`` is still anonymous, so every JWT client
behind one address would share a budget. This DRF throttle calls
django-ratelimit's ``get_usage`` from inside DRF's ``initial()``, after
authentication: ledger reads and writes are counted per authenticated user,
the auth endpoints per client IP and per submitted username. The counters live
in the ``ratelimit`` cache alias (Redis in production), so the limit holds
across every gunicorn worker and host. If that cache cannot count (Redis gone),
the request is allowed (fail open), logged once per outage and counted in
``ledger_ratelimit_errors_total``: losing Redis must not take the ledger down.

Counting: django-ratelimit's ``get_usage`` counts with ``cache.add`` then
``cache.incr``, two round trips to Redis per key and request. On Redis this
module counts the same keys (django-ratelimit's key and window scheme, so its
own ``get_usage`` reads the same counters) with one Lua script per request:
every key of the request is incremented, and given its expiry when created,
in one atomic round trip. Any other cache (the in-process default of
``make run``) goes through ``get_usage`` unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_ip,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)
from prometheus_client import Counter
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ledger_core.cache import redis_client, run_script
from ledger_core.circuit import Circuit

logger = logging.getLogger("ledger_site.ratelimit")

REFUSALS = Counter(
    "ledger_ratelimit_refusals", "Requests refused by a rate limit (429).", ["group"]
)
ERRORS = Counter(
    "ledger_ratelimit_errors",
    "Rate-limit checks that could not reach the counter store (request allowed).",
)

#: WSGI environ key: a count made before the request reached DRF (by the
#: fast lane, ``ledger_site.fastpath``), as ``((group, keys, usages), fetched)``.
#: Only server code can set environ keys of this form.
HANDED_OVER = "ledger.ratelimit_precount"

RATE_SETTINGS = {
    "ledger_read": "RATE_LIMIT_LEDGER_READ",
    "ledger_write": "RATE_LIMIT_LEDGER_WRITE",
    "auth": "RATE_LIMIT_AUTH",
}
outage = Circuit("rate-limit counters", logger, "allowing requests until they answer (fail open)")

# KEYS: the counters, then keys to read. ARGV[1]: how many counters;
# ARGV[1 + i]: the expiry in seconds of counter i. Returns the counts, then the
# values read (nil for a missing key).
_COUNT_SCRIPT = """
local counters = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  if i <= counters then
    local count = redis.call('INCR', key)
    if count == 1 then redis.call('EXPIRE', key, ARGV[i + 1]) end
    out[i] = count
  else
    out[i] = redis.call('GET', key)
  end
end
return out
"""
_SERVER_FIELDS = ("host", "port", "path", "db", "username")


def _same_server(a: Any, b: Any) -> bool:
    kwargs_a, kwargs_b = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return all(kwargs_a.get(f) == kwargs_b.get(f) for f in _SERVER_FIELDS)


def count_usage(
    counters: list[tuple[str, str]], rate: str, fetch: list[tuple[str, str]] = ()
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Any]]:
    """Count one request against each ``(group, key)`` counter, the way
    django-ratelimit's ``get_usage(..., increment=True)`` does, in one Redis
    round trip for all of them.

    ``fetch``: ``(cache alias, key)`` pairs the request will read next; those
    whose cache lives on the same Redis server are read in the same round
    trip. Returns each counter's usage (``count``, ``limit``, ``should_limit``,
    ``time_left``) and the values read (raw, None for a missing key), by
    ``(alias, key)``. Raises if the store fails."""
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    client = redis_client(cache)
    if client is None:
        return [_usage_from_get_usage(group, key, rate) for group, key in counters], {}
    limit, period = _split_rate(rate)
    now = time.time()
    windows = [_get_window(key, period) for _group, key in counters]
    cache_keys = [
        cache.make_key(_make_cache_key(group, window, rate, key, None))
        for (group, key), window in zip(counters, windows, strict=True)
    ]
    reads = []
    shared: dict[str, Any] = {}  # alias -> its cache, if on the counters' Redis server
    for alias, key in fetch:
        if alias not in shared:
            other = caches[alias]
            other_client = redis_client(other)
            on_server = other_client is not None and _same_server(client, other_client)
            shared[alias] = other if on_server else None
        if shared[alias] is not None:
            reads.append(((alias, key), shared[alias].make_key(key)))
    expiry = [period + EXPIRATION_FUDGE] * len(cache_keys)
    out = run_script(
        client, _COUNT_SCRIPT, cache_keys + [raw for _, raw in reads], [len(cache_keys), *expiry]
    )
    usages = [
        {"count": int(count), "limit": limit, "should_limit": int(count) > limit,
         "time_left": window - now}
        for count, window in zip(out, windows, strict=False)
    ]  # fmt: skip
    fetched = {name: value for (name, _), value in zip(reads, out[len(cache_keys) :], strict=True)}
    return usages, fetched


def _usage_from_get_usage(group: str, key: str, rate: str) -> dict[str, Any]:
    usage = get_usage(
        None, group=group, key=lambda _group, _request: key, rate=rate, increment=True
    )
    if usage is None:  # django-ratelimit could not count (fail-open path)
        raise ConnectionError("rate-limit counter store did not count")
    return usage


def client_ip(request: Request) -> str:
    try:
        return _get_ip(request) or "unknown"
    except Exception:  # noqa: BLE001 - a malformed proxy header must not 500
        return "unknown"


def _username_in_body(request: Request) -> str | None:
    try:
        data = request.data
    except Exception:  # noqa: BLE001 - the view reports the parse error itself
        return None
    value = data.get("username") if hasattr(data, "get") else None
    if isinstance(value, str) and value:
        return value.strip().lower()[:150]
    return None


def _group(request: Request, view: Any) -> str:
    return getattr(view, "ratelimit_group", None) or (
        "ledger_read" if request.method in SAFE_METHODS else "ledger_write"
    )


def _count(
    group: str, keys: list[str], fetch: list[tuple[str, str]] = ()
) -> tuple[list[dict[str, Any]] | None, dict[tuple[str, str], Any]]:
    """Count one request against ``keys`` of ``group`` (see ``count_usage``).
    If the counter store fails: ``(None, {})``, counted, the outage logged once
    and the circuit opened; the caller lets the request through (fail open)."""
    counters = [(f"{group}:{key.split(':', 1)[0]}", key) for key in keys]
    try:
        usages, fetched = count_usage(counters, getattr(settings, RATE_SETTINGS[group]), fetch)
    except Exception as exc:  # noqa: BLE001 - fail open on any counter-store fault
        ERRORS.inc()
        outage.trip(exc, "count")
        return None, {}
    outage.reset()
    return usages, fetched


def _handed_over(request: Request, group: str, keys: list[str]) -> tuple[Any, Any] | None:
    """``(usages, fetched)`` of a count the fast lane made for this group and
    these keys before handing the request over (``HANDED_OVER``), or None."""
    handed = request.META.get(HANDED_OVER)
    if handed is None or handed[0][:2] != (group, keys):
        return None
    return handed[0][2], handed[1]


def _count_for_view(
    group: str, keys: list[str], request: Request, view: Any
) -> tuple[list[dict[str, Any]] | None, dict[tuple[str, str], Any]]:
    """``_count`` with what the view asks to read in the same round trip."""
    fetch = getattr(view, "ratelimit_fetch", None)
    return _count(group, keys, fetch(request) if fetch is not None else ())


def precount_for_user(
    request: Request, user_pk: Any, fetch: list[tuple[str, str]]
) -> dict[tuple[str, str], Any] | None:
    """Count ``request`` now, for the user it authenticates as, reading ``fetch``
    in the same round trip; ``RateLimit`` then uses this count instead of
    counting again. Called by authentication, which needs ``fetch`` (the
    user's cached auth state) before DRF runs the throttles: a write then
    costs one Redis round trip for both. Returns the values read, or None when
    nothing was counted here (the throttle counts as usual)."""
    view = (getattr(request, "parser_context", None) or {}).get("view")
    if (
        view is None
        or not getattr(settings, "RATELIMIT_ENABLE", True)
        or RateLimit not in getattr(view, "throttle_classes", ())
    ):
        return None
    group = _group(request, view)
    if group not in ("ledger_read", "ledger_write"):
        return None
    keys = [f"user:{user_pk}"]
    handed = _handed_over(request, group, keys)
    if handed is not None:
        usages, fetched = handed
    elif outage.is_open():
        return None
    else:
        usages, fetched = _count(group, keys, fetch)
    request._ratelimit_precounted = (group, keys, usages)
    request._ratelimit_fetched = fetched = fetched if usages is not None else None
    return fetched


def precount_for_view(request: Request, view: Any) -> bool:
    """Count ``request`` for ``view`` as ``RateLimit`` would (same group, keys
    and prefetch) and leave the count on the request for it; False when
    nothing was counted (group ``none``, or the counter store's circuit open).
    Used by the fast lane (``ledger_site.fastpath``) for balance reads."""
    group = _group(request, view)
    if group == "none" or outage.is_open():
        return False
    keys = RateLimit().keys(group, request)
    usages, fetched = _count_for_view(group, keys, request, view)
    request._ratelimit_precounted = (group, keys, usages)
    request._ratelimit_fetched = fetched
    return True


class RateLimit(BaseThrottle):
    """Per-view rate limit group; ``ratelimit_group`` on the view names it.

    Groups: ``ledger_read`` / ``ledger_write`` (default by HTTP method, keyed
    by user), ``auth`` (keyed by client IP and by username), ``none``.

    A view may define ``ratelimit_fetch(request)``: the ``(cache alias, key)``
    pairs it is about to read. They are read in the counters' round trip and
    left in ``request.ledger_prefetched`` (``{(alias, key): raw value}``), so a
    cached balance read costs one Redis round trip, not two.
    """

    def __init__(self) -> None:
        self._wait: float | None = None

    def keys(self, group: str, request: Request) -> list[str]:
        if group == "auth":
            keys = [f"ip:{client_ip(request)}"]
            username = _username_in_body(request)
            if username:
                keys.append(f"username:{username}")
            return keys
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return [f"user:{user.pk}"]
        return [f"ip:{client_ip(request)}"]

    def allow_request(self, request: Request, view: Any) -> bool:
        if not getattr(settings, "RATELIMIT_ENABLE", True):
            return True
        group = _group(request, view)
        if group == "none":
            return True
        keys = self.keys(group, request)
        precounted = getattr(request, "_ratelimit_precounted", None)
        handed = _handed_over(request, group, keys)
        if precounted is not None and precounted[:2] == (group, keys):
            usages = precounted[2]
        elif handed is not None:
            usages, request.ledger_prefetched = handed[0], handed[1] or {}
        else:
            if outage.is_open():
                ERRORS.inc()
                return True
            usages, request.ledger_prefetched = _count_for_view(group, keys, request, view)
        if usages is None:  # the counter store failed: fail open
            return True
        for key, usage in zip(keys, usages, strict=True):
            if usage["should_limit"]:
                self._wait = max(1, math.ceil(usage["time_left"]))
                REFUSALS.labels(group).inc()
                logger.info(
                    "rate limited",
                    extra={"ratelimit": {"group": group, "key": key.split(":", 1)[0]}},
                )
                return False
        return True

    def wait(self) -> float | None:
        return self._wait
