"""Request id and one structured log line per request; request metrics."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept only if it is short and plain; anything else
# is replaced, so logs cannot be forged or flooded through this header.
SANE_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:\-]{1,128}\Z")
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

# A standard-library logger: its records take the JSON formatter's direct path
# (ledger_site.logging.JsonLineFormatter); the fields go in ``extra``.
log = logging.getLogger("ledger_site.request")


def begin_request_log(request: HttpRequest) -> float:
    """Give ``request`` its id (the client's, if sane) and bind it to every log
    line of the request; returns the start time for ``end_request_log``."""
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = supplied if SANE_REQUEST_ID.match(supplied) else secrets.token_hex(16)
    request.request_id = request_id  # type: ignore[attr-defined]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return time.perf_counter()


def end_request_log(request: HttpRequest, response: HttpResponse, started: float) -> None:
    """Return the request id in ``X-Request-ID`` and log the request's one line."""
    response[REQUEST_ID_HEADER] = request.request_id  # type: ignore[attr-defined]
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


class RequestLogMiddleware:
    """Binds a request id to every log line of the request, returns it in
    ``X-Request-ID``, and logs the request once it is answered: user, method,
    path (no query string), status and duration. Never bodies or headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = begin_request_log(request)
        try:
            response = self.get_response(request)
            end_request_log(request, response, started)
            return response
        finally:
            structlog.contextvars.clear_contextvars()


# --- Request metrics --------------------------------------------------------
# django-prometheus' middleware records ~15 series per request (body-size and
# latency histograms, transport, charset, template, streaming ...), each a
# label look-up and a write to a multiprocess file: ~0.2 ms of CPU per request,
# a quarter of a cached balance read. These subclasses keep the same metric
# names and labels for what the dashboards and alerts use, and drop the rest:
#   django_http_requests_total_by_method, django_http_requests_before_middlewares,
#   django_http_responses_before_middlewares, django_http_responses_total_by_status,
#   django_http_responses_total_by_status_view_method,
#   django_http_requests_latency_seconds_by_view_method,
#   django_http_exceptions_total_by_type / _by_view.


class _Children:
    """Label children of prometheus metrics, looked up once per label set."""

    def __init__(self) -> None:
        self._children: dict[tuple, object] = {}

    def get(self, metric, *labels: str):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class MetricsBeforeMiddleware(PrometheusBeforeMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        self.metrics.requests_total.inc()

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        self.metrics.responses_total.inc()
        return response


class MetricsAfterMiddleware(PrometheusAfterMiddleware):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.children = _Children()

    def process_request(self, request: HttpRequest) -> None:
        self.children.get(self.metrics.requests_by_method, self._method(request)).inc()
        request.prometheus_after_middleware_event = time.perf_counter()

    def process_view(self, request, view_func, *view_args, **view_kwargs) -> None:
        return None

    def process_template_response(self, request, response):
        return response

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        method = self._method(request)
        view = self._get_view_name(request)
        status = str(response.status_code)
        metrics, children = self.metrics, self.children
        children.get(metrics.responses_by_status, status).inc()
        children.get(metrics.responses_by_status_view_method, status, view, method).inc()
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is not None:
            children.get(metrics.requests_latency_by_view_method, view, method).observe(
                time.perf_counter() - started
            )
        else:
            metrics.requests_unknown_latency.inc()
        return response
