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
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django_ratelimit.core import _get_ip, get_usage
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

RATE_SETTINGS = {
    "ledger_read": "RATE_LIMIT_LEDGER_READ",
    "ledger_write": "RATE_LIMIT_LEDGER_WRITE",
    "auth": "RATE_LIMIT_AUTH",
}
outage = Circuit("rate-limit counters", logger, "allowing requests until they answer (fail open)")


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


class RateLimit(BaseThrottle):
    """Per-view rate limit group; ``ratelimit_group`` on the view names it.

    Groups: ``ledger_read`` / ``ledger_write`` (default by HTTP method, keyed
    by user), ``auth`` (keyed by client IP and by username), ``none``.
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
        group = getattr(view, "ratelimit_group", None) or (
            "ledger_read" if request.method in SAFE_METHODS else "ledger_write"
        )
        if group == "none":
            return True
        rate = getattr(settings, RATE_SETTINGS[group])
        if outage.is_open():
            ERRORS.inc()
            return True
        try:
            for key in self.keys(group, request):
                usage = get_usage(
                    request,
                    group=f"{group}:{key.split(':', 1)[0]}",
                    key=lambda _group, _request, key=key: key,
                    rate=rate,
                    increment=True,
                )
                if usage is not None and usage["should_limit"]:
                    self._wait = max(1, math.ceil(usage["time_left"]))
                    REFUSALS.labels(group).inc()
                    logger.info(
                        "rate limited",
                        extra={"ratelimit": {"group": group, "key": key.split(":", 1)[0]}},
                    )
                    return False
        except Exception as exc:  # noqa: BLE001 - fail open on any counter-store fault
            ERRORS.inc()
            outage.trip(exc, "count")
            return True
        outage.reset()
        return True

    def wait(self) -> float | None:
        return self._wait
