"""One exception handler for the whole API: every error is ``{"code", "detail", ...}``.

Ledger refusals carry their own code and extra fields; DRF's validation,
authentication, permission and throttling errors are mapped to stable codes;
a database that cannot be reached is a 503 ``unavailable``. Every handled error
marks the request's transaction for rollback, so nothing half-done commits.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..exceptions import LedgerError

logger = logging.getLogger("ledger_core.api")

_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ValidationError, "invalid"),
    (exceptions.ParseError, "invalid"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
]


#: Codes of authentication failures that tell a client what to do next
#: (``token_expired``: refresh; ``token_not_valid``: log in again).
_TOKEN_CODES = frozenset({"token_expired", "token_not_valid"})


def _code_for(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.AuthenticationFailed) and exc.default_code in _TOKEN_CODES:
        return str(exc.default_code)
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return str(exc.default_code)


def _detail_text(detail: Any, fallback: str) -> str:
    """The message as plain text (not DRF's ``ErrorDetail``, which renderers
    other than JSON, such as the schema's YAML, write as a mapping)."""
    if isinstance(detail, dict):
        detail = detail.get("detail")
    elif isinstance(detail, list) and detail:
        detail = detail[0]
    return str(detail) if isinstance(detail, str) else fallback


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"code": code, "detail": detail, **extra}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, LedgerError):
        set_rollback()
        retry = {"Retry-After": "1"} if exc.status == status.HTTP_503_SERVICE_UNAVAILABLE else {}
        return Response(exc.as_dict(), status=exc.status, headers=retry)

    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    ):
        set_rollback()
        logger.error("database unavailable: %s", exc)
        return Response(
            error_body("unavailable", "The ledger is temporarily unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )

    if isinstance(exc, RequestDataTooBig):
        set_rollback()
        return Response(
            error_body("too_large", "The request body is larger than this server accepts."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):  # e.g. too many form fields
        exc = exceptions.ParseError(str(exc) or "Malformed request.")
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))  # type: ignore[attr-defined]

    code = _code_for(exc)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(code, "Invalid input.", errors=exc.detail)
        first = _first_message(exc.detail)
        if first:
            body["detail"] = first
    else:
        body = error_body(code, _detail_text(exc.detail, str(exc.default_detail)))
    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


def _first_message(detail: Any, prefix: str = "") -> str | None:
    if isinstance(detail, str):
        return f"{prefix}{detail}"
    if isinstance(detail, list):
        for item in detail:
            found = _first_message(item, prefix)
            if found:
                return found
    if isinstance(detail, dict):
        for key, item in detail.items():
            label = "" if key == "non_field_errors" else f"{key}: "
            found = _first_message(item, prefix + label)
            if found:
                return found
    return None
