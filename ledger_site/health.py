"""Liveness and readiness probes; no authentication, no rate limiting."""

from __future__ import annotations

import uuid

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_cache() -> str:
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return the value just written")
    cache.delete(key)
    return "ok"


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database answers: 200, else 503. The cache is reported
    (``"ok"`` or ``"degraded"``) but does not decide: without Redis the API
    keeps serving from PostgreSQL, so an orchestrator must not pull every
    replica on a Redis outage."""
    checks: dict[str, str] = {}
    try:
        checks["database"] = _check_database()
    except Exception as exc:  # noqa: BLE001  (any failure means not ready)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        checks["cache"] = _check_cache()
    except Exception:  # noqa: BLE001  (reported, not decisive)
        checks["cache"] = "degraded"
    ready = checks["database"] == "ok"
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
