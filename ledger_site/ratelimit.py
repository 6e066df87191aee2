"""Rate limits: django-ratelimit counters in the shared cache, checked after authentication.

Design decision: django-ratelimit's decorator runs before DRF authenticates a
JWT request, when ``request.user`` is still anonymous, so every JWT client
behind one address would share a budget. This DRF throttle calls
django-ratelimit's public ``get_usage`` from DRF's ``initial()``, after
authentication: ledger reads and writes are counted per authenticated user,
the auth endpoints per client IP and per submitted username. The counters live
in the ``ratelimit`` cache alias (Redis in production), so a limit holds
across every gunicorn worker and host.

If the counter store cannot count (Redis gone or hung), the request is allowed
(fail open), counted in ``ledger_ratelimit_errors_total`` and the outage logged
once; for a short while after a failure the store is not asked at all
(``ledger_core.circuit``), so a hung Redis does not add its timeout to every
request. Losing Redis must not take the ledger down.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django_ratelimit.core import get_usage
from prometheus_client import Counter
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ledger_core.circuit import Circuit

logger = logging.getLogger("ledger_site.ratelimit")

REFUSALS = Counter(
    "ledger_ratelimit_refusals", "Requests refused by a rate limit (429).", ["group"]
)
ERRORS = Counter(
    "ledger_ratelimit_errors",
    "Rate-limit checks that could not reach the counter store (request allowed).",
)

#: Limit group -> the setting holding its django-ratelimit rate (e.g. ``120/m``).
RATE_SETTINGS = {
    "ledger_read": "RATE_LIMIT_LEDGER_READ",
    "ledger_write": "RATE_LIMIT_LEDGER_WRITE",
    "auth": "RATE_LIMIT_AUTH",
}
outage = Circuit("rate-limit counters", logger, "allowing requests until they answer (fail open)")


def submitted_username(request: Request) -> str | None:
    """The account an ``auth`` request tries, normalised, if any: the
    authenticated user's (a password change, whatever its body says), else
    the ``username`` of a login or registration body, or the ``email`` of a
    password reset request (so one mailbox is not flooded from many
    addresses); a body that does not parse raises its error (400, 413 or 415)."""
    if request.user.is_authenticated:
        value = request.user.get_username()
    else:
        data = request.data
        value = (data.get("username") or data.get("email")) if hasattr(data, "get") else None
    if isinstance(value, str) and value:
        return value.strip().lower()[:150]
    return None


def limit_group(request: Request, view: Any) -> str:
    """The view's ``ratelimit_group``, else ``ledger_read``/``ledger_write`` by method."""
    return getattr(view, "ratelimit_group", None) or (
        "ledger_read" if request.method in SAFE_METHODS else "ledger_write"
    )


def limited_for(request: Any, group: str, keys: list[tuple[str, Any]]) -> float | None:
    """Count ``request`` against each ``(name, django-ratelimit key)`` of
    ``group``; the seconds to wait if any is over its rate, else None (also
    when counting is off or the store cannot count: fail open)."""
    if not settings.RATELIMIT_ENABLE or group == "none":
        return None
    rate = getattr(settings, RATE_SETTINGS[group])
    for name, key in keys:
        usage = _usage(request, f"{group}:{name}", key, rate)
        if usage is not None and usage["should_limit"]:
            REFUSALS.labels(group).inc()
            logger.info("rate limited", extra={"ratelimit": {"group": group, "key": name}})
            return max(1, math.ceil(usage["time_left"]))
    return None


def _usage(request: Any, group: str, key: Any, rate: str) -> dict | None:
    """django-ratelimit's usage after counting this request; None if the store
    could not count (the request is allowed)."""
    if outage.is_open():
        ERRORS.inc()
        return None
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
    except Exception as exc:  # noqa: BLE001 - fail open on any counter-store fault
        ERRORS.inc()
        outage.trip(exc, "count")
        return None
    if usage is None:  # django-ratelimit's own fail-open answer
        ERRORS.inc()
        return None
    outage.reset()
    return usage


def auth_keys(username: str | None) -> list[tuple[str, Any]]:
    """The keys of the ``auth`` group: the client address, and the submitted
    username if there is one (so that one account is not tried from many addresses)."""
    keys: list[tuple[str, Any]] = [("ip", "ip")]
    if username:
        keys.append(("username", lambda _group, _request, u=username: u))
    return keys


class RateLimit(BaseThrottle):
    """Per-view rate limit group; ``ratelimit_group`` on the view names it.

    Groups: ``ledger_read`` / ``ledger_write`` (default by HTTP method, keyed
    by user), ``auth`` (keyed by client IP and by submitted username), ``none``.
    """

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        group = limit_group(request, view)
        keys, unreadable = [("user", "user_or_ip")], None
        if group == "auth":
            try:
                keys = auth_keys(submitted_username(request))
            except Exception as error:  # noqa: BLE001 - raised below, once counted
                keys, unreadable = auth_keys(None), error
        self._wait = limited_for(request, group, keys)
        if self._wait is None and unreadable is not None:
            # Counted by address like any attempt, then answered as what it
            # is: DRF reports a parse error once and then reads the body as
            # empty, so the view would say "username: This field is required".
            raise unreadable
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
