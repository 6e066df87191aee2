"""Request id and one structured log line per request."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept only if it is short and plain; anything else
# is replaced, so logs cannot be forged or flooded through this header.
SANE_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:\-]{1,128}\Z")
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

log = structlog.get_logger("ledger_site.request")


class RequestLogMiddleware:
    """Binds a request id to every log line of the request, returns it in
    ``X-Request-ID``, and logs the request once it is answered: user, method,
    path (no query string), status and duration. Never bodies or headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if SANE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            user = getattr(request, "user", None)
            fields = {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user": user.get_username() if user is not None and user.is_authenticated else None,
            }
            if request.path in QUIET_PATHS and response.status_code < 400:
                log.debug("request", **fields)
            else:
                log.info("request", **fields)
            return response
        finally:
            structlog.contextvars.clear_contextvars()
