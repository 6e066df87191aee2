"""Request id and one structured log line per request."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept only if it is short and plain; anything else
# is replaced, so logs cannot be forged or flooded through this header.
SANE_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:\-]{1,128}\Z")
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

# The request line's fields go in ``extra`` (see ledger_site.logging).
log = logging.getLogger("ledger_site.request")


class RequestLogMiddleware:
    """Binds a request id to every log line of the request, returns it in
    ``X-Request-ID``, and logs the request once it is answered: user, method,
    path (no query string), status and duration. Never bodies or headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if SANE_REQUEST_ID.match(supplied) else secrets.token_hex(16)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            self.log(request, response, started)
            return response
        finally:
            structlog.contextvars.clear_contextvars()

    def log(self, request: HttpRequest, response: HttpResponse, started: float) -> None:
        user = getattr(request, "user", None)
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "user": user.get_username() if user is not None and user.is_authenticated else None,
        }
        if request.path in QUIET_PATHS and response.status_code < 400:
            log.debug("request", extra=fields)
        else:
            log.info("request", extra=fields)
