"""The site's front door: a landing page, the API root, JSON 400s and 404s under
/api/, and the Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger_core.api.exceptions import error_body
from ledger_core.operations import registry


def ledger_apps() -> dict[str, str]:
    """The registered consumer apps whose ledger endpoints the site mounts (a
    URL namespace named after the app's label, as ``ledger_urls`` expects),
    each with the path of its ledger, in registration order: an app added to
    the site appears here by itself."""
    mounted = {}
    for app in registry.apps():
        try:
            mounted[app.label] = reverse(f"{app.label}:ledger-list")
        except NoReverseMatch:
            continue  # registered without endpoints of its own (e.g. "site")
    return mounted


def index(request: HttpRequest) -> HttpResponse:
    """What this site is, and where to go from here."""
    return render(request, "ledger_site/index.html", {"apps": ledger_apps().items()})


def _links(request: Request) -> dict[str, Any]:
    def url(name: str, **kwargs: str) -> str:
        return request.build_absolute_uri(reverse(name, kwargs=kwargs or None))

    example = {"owner_id": "OWNER"}
    links: dict[str, Any] = {
        "auth": {
            "register": url("auth:register"),
            "token": url("auth:token"),
            "refresh": url("auth:token-refresh"),
            "logout": url("auth:logout"),
            "password": url("auth:password"),
            "password_reset": url("auth:password-reset"),
            "email": url("auth:email"),
            "me": url("auth:me"),
            "session_login": url("rest_framework:login"),
        },
    }
    for app in ledger_apps():
        links[app] = {
            "post": url(f"{app}:ledger-list"),
            "batch": url(f"{app}:ledger-batch"),
            "balances": url(f"{app}:ledger-balances"),
            "balance": url(f"{app}:ledger-detail", **example),
            "entries": url(f"{app}:ledger-entries", **example),
            "holds": url(f"{app}:ledger-hold-create"),
            "owner_holds": url(f"{app}:ledger-owner-holds", **example),
        }
    links["content"]["items"] = url("content:item-list")
    links["rewards"]["daily"] = url("rewards:daily")
    links["rewards"]["referrals"] = url("rewards:referrals")
    links["events"] = {"feed": url("events"), "webhooks": url("webhooks")}
    links["docs"] = {
        "schema": url("schema"),
        "swagger": url("swagger-ui"),
        "redoc": url("redoc"),
    }
    return links


class ApiRootView(APIView):
    """Every endpoint of the API, by app (replace OWNER with an owner id)."""

    permission_classes = [AllowAny]
    ratelimit_group = "none"

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(_links(request))


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") and "text/html" not in request.headers.get("Accept", "")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """400 for what Django refuses before any view runs (a Host the site does
    not serve, a malformed request): the JSON error shape under /api/."""
    if _wants_json(request):
        return JsonResponse(error_body("bad_request", "The request was refused."), status=400)
    return django_bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404: the JSON error shape under /api/ (unless the client asks for HTML)."""
    if _wants_json(request):
        return JsonResponse(
            error_body("not_found", f"No API endpoint at {request.path}."), status=404
        )
    return page_not_found(request, exception)


def metrics(request: HttpRequest) -> HttpResponse:
    """django-prometheus's metrics (every worker's, under gunicorn). With
    ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``: 401
    otherwise, in the API's error shape."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = JsonResponse(
                error_body("not_authenticated", "The metrics need the metrics token."),
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
