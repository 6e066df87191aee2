"""The WSGI handler, with a fast lane for single ledger posts.

``POST /api/<app>/ledger/`` is the one request every consumer app sends on its
hot path. Through Django's handler, its eleven middleware and DRF's dispatch,
the framework around a post costs more than the post itself (docs/performance.md).
``LedgerWSGIHandler`` answers the common form of that request directly, with
the same parts the full stack uses: the JWT authenticator, the rate limiter's
count, ``entry_post``, DRF's JSON renderer and exception handler, Django's
security, clickjacking and common middleware for the response headers, the
request log line and the request metrics. Tests send the same requests both
ways and compare status, headers and body (tests/ledger_site/test_fastpath.py).

What the fast lane takes: a POST to a ledger viewset's create route (the
viewset and the site configured as shipped), no query string,
``Content-Type: application/json``, ``Accept`` absent, ``*/*`` or
``application/json``, no cookies, a valid bearer access token, a host the site
serves and (with HTTPS enforced) a secure request, and a body whose fields
have the plain JSON types of a post. Everything else goes to Django unchanged,
before anything is counted or stored.

Once the rate limiter has counted the request, a refusal there or by
authentication (inactive or deleted user) is handed to Django with that count
attached (``ledger_site.ratelimit.HANDED_OVER``), so it is counted once and
answered by DRF as always. Ledger refusals (400/403/409) and database faults
are answered here by DRF's renderer and the site's exception handler.

``LEDGER_FAST_POST = False`` turns the fast lane off. It also stays off under
``DEBUG`` and whenever the middleware list or the request-level settings it
reproduces differ from those it was written for.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import structlog
from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.http import HttpRequest
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve, set_script_prefix, set_urlconf
from django.utils.cache import patch_vary_headers
from django.utils.log import log_response
from prometheus_client import Counter
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.json import strict_constant
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from ledger_core.actors import Actor
from ledger_core.api.exceptions import exception_handler
from ledger_core.api.serializers import entry_data, simple_post_item
from ledger_core.api.views import REPLAY_HEADER, LedgerViewSet
from ledger_core.services import entry_post

from .jwt import LedgerJWTAuthentication
from .middleware import (
    MetricsAfterMiddleware,
    MetricsBeforeMiddleware,
    begin_request_log,
    end_request_log,
)
from .negotiation import LedgerContentNegotiation
from .ratelimit import HANDED_OVER, RateLimit

FAST_POSTS = Counter(
    "ledger_fast_posts",
    "Single posts to a ledger create route: answered by the fast lane (served), "
    "sent to the full stack before any side effect (passed), or after the rate "
    "limiter counted them (handed_over).",
    ["outcome"],
)

#: The middleware whose effects the fast lane reproduces, in this order. With
#: any other list the fast lane is off: a new middleware must be reviewed here.
FAST_PATH_MIDDLEWARE = [
    "ledger_site.middleware.MetricsBeforeMiddleware",
    "ledger_site.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ledger_site.middleware.MetricsAfterMiddleware",
]

# Viewset methods the fast lane stands in for: a consumer viewset that
# overrides any of them is served by DRF.
_VIEWSET_HOOKS = (
    "dispatch",
    "initialize_request",
    "initial",
    "perform_authentication",
    "check_permissions",
    "check_throttles",
    "perform_content_negotiation",
    "finalize_response",
    "handle_exception",
    "get_exception_handler",
    "get_authenticators",
    "get_permissions",
    "get_throttles",
    "get_parsers",
    "get_renderers",
    "get_content_negotiator",
    "get_renderer_context",
    "create",
    "_validated_post",
)
_JSON = "application/json"
_ACCEPTED = frozenset({"*/*", _JSON})
_MAX_ROUTES = 256


class _HandOver(Exception):
    """The full stack answers this request."""


@dataclasses.dataclass(frozen=True)
class _Route:
    view: LedgerViewSet
    match: Any
    headers: tuple[tuple[str, str], ...]


def _ignore(request: HttpRequest) -> None:
    return None


def _viewset_is_plain(cls: type) -> bool:
    """True if ``cls`` serves posts exactly as ``LedgerViewSet`` does."""
    if not (isinstance(cls, type) and issubclass(cls, LedgerViewSet)):
        return False
    if any(getattr(cls, hook) is not getattr(LedgerViewSet, hook) for hook in _VIEWSET_HOOKS):
        return False
    authenticators = list(cls.authentication_classes)
    parsers = [p for p in cls.parser_classes if p.media_type == _JSON]
    return (
        bool(authenticators)
        and authenticators[0] is LedgerJWTAuthentication
        and list(cls.permission_classes) == [IsAuthenticated]
        and list(cls.throttle_classes) == [RateLimit]
        and getattr(cls, "ratelimit_group", None) is None
        and parsers[:1] == [JSONParser]
        and list(cls.renderer_classes)[:1] == [JSONRenderer]
        and cls.content_negotiation_class is LedgerContentNegotiation
    )


def _site_is_plain() -> bool:
    """True if the site is configured as the fast lane expects."""
    databases = settings.DATABASES.values()
    return (
        getattr(settings, "LEDGER_FAST_POST", True)
        and not settings.DEBUG
        and list(settings.MIDDLEWARE) == FAST_PATH_MIDDLEWARE
        and not any(db.get("ATOMIC_REQUESTS") for db in databases)
        and not settings.DISALLOWED_USER_AGENTS
        and not settings.PREPEND_WWW
        and settings.FORCE_SCRIPT_NAME is None
        and api_settings.EXCEPTION_HANDLER is exception_handler
        and list(jwt_settings.AUTH_HEADER_TYPES) == ["Bearer"]
        and jwt_settings.AUTH_HEADER_NAME == "HTTP_AUTHORIZATION"
    )


class LedgerWSGIHandler(WSGIHandler):
    """Django's WSGI handler; single ledger posts take the fast lane."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = _site_is_plain()
        self._routes: dict[str, _Route | None] = {}
        self._authenticator = LedgerJWTAuthentication()
        self._renderer = JSONRenderer()
        self._strict = api_settings.STRICT_JSON
        # Django's own response-phase code for the headers these add.
        self._security = SecurityMiddleware(_ignore)
        self._common = CommonMiddleware(_ignore)
        self._xframe = XFrameOptionsMiddleware(_ignore)
        self._metrics_before = MetricsBeforeMiddleware(_ignore)
        self._metrics_after = MetricsAfterMiddleware(_ignore)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        route = self._route(environ) if self.fast else None
        if route is None:
            return super().__call__(environ, start_response)
        try:
            return self._serve(route, environ, start_response)
        except _HandOver:
            return super().__call__(environ, start_response)

    # --- what the fast lane takes ------------------------------------------

    def _route(self, environ: dict) -> _Route | None:
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        path = environ.get("PATH_INFO", "")
        if not path.endswith("/ledger/"):
            return None
        try:
            route = self._routes[path]
        except KeyError:
            route = self._resolve(path)
            if len(self._routes) < _MAX_ROUTES:
                self._routes[path] = route
        if route is None:
            return None
        if (
            environ.get("QUERY_STRING")
            or environ.get("CONTENT_TYPE") != _JSON
            or environ.get("HTTP_ACCEPT", "*/*").strip() not in _ACCEPTED
            or "HTTP_COOKIE" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
            or not environ.get("HTTP_AUTHORIZATION", "").startswith("Bearer ")
        ):
            FAST_POSTS.labels("passed").inc()
            return None
        return route

    def _resolve(self, path: str) -> _Route | None:
        if not path.isascii():
            return None
        try:
            match = resolve(path)
        except Resolver404:
            return None
        cls = getattr(match.func, "cls", None)
        actions = getattr(match.func, "actions", None) or {}
        if match.args or match.kwargs or actions.get("post") != "create":
            return None
        if not _viewset_is_plain(cls):
            return None
        view = cls(**getattr(match.func, "initkwargs", {}))
        view.action_map = actions
        for method, action in actions.items():
            setattr(view, method, getattr(view, action))
        view.action = "create"
        view.args, view.kwargs = (), {}
        view.format_kwarg = None
        return _Route(view=view, match=match, headers=tuple(view.default_response_headers.items()))

    # --- serving -------------------------------------------------------------

    def _serve(self, route: _Route, environ: dict, start_response: Any) -> Any:
        fields = self._body(environ)
        request = self.request_class(environ)
        try:
            request.get_host()
        except DisallowedHost:
            self._pass()
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            self._pass()
        try:
            header = self._authenticator.get_header(request)
            raw_token = self._authenticator.get_raw_token(header) if header else None
            if raw_token is None:
                self._pass()
            self._authenticator.get_validated_token(raw_token)
        except (APIException, TokenError):
            self._pass()

        # From here on, as Django's handler would: the request has started.
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        set_urlconf(settings.ROOT_URLCONF)
        request.resolver_match = route.match
        started = begin_request_log(request)
        try:
            response = self._respond(route, request, fields, environ, started)
        finally:
            structlog.contextvars.clear_contextvars()
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        response._handler_class = self.__class__
        status = f"{response.status_code} {response.reason_phrase}"
        headers = [
            *response.items(),
            *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
        ]
        start_response(status, headers)
        return response

    def _pass(self) -> None:
        FAST_POSTS.labels("passed").inc()
        raise _HandOver

    def _body(self, environ: dict) -> dict[str, Any]:
        """The post's fields, if its body is plain JSON of the right types."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length <= 0 or (limit is not None and length > limit):
            self._pass()
        body = environ["wsgi.input"].read(length)
        # Whatever happens next, Django can read the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            data = json.loads(
                body.decode(settings.DEFAULT_CHARSET),
                parse_constant=strict_constant if self._strict else None,
            )
        except ValueError:
            self._pass()
        fields = simple_post_item(data)
        if fields is None:
            self._pass()
        return fields

    def _respond(
        self, route: _Route, request: HttpRequest, fields: dict, environ: dict, started: float
    ) -> Any:
        request.parser_context = {"view": route.view}  # type: ignore[attr-defined]
        try:
            user, _ = self._authenticator.authenticate(request)
        except Exception:  # noqa: BLE001 - refused, or the database is down: DRF answers
            self._hand_over(request, environ)
        precounted = getattr(request, "_ratelimit_precounted", None)
        if getattr(settings, "RATELIMIT_ENABLE", True):
            if precounted is None:
                self._hand_over(request, environ)
            usages = precounted[2]
            if usages is not None and any(usage["should_limit"] for usage in usages):
                self._hand_over(request, environ)
        request.user = user
        # The request metrics, from the time the request started.
        self._metrics_before.process_request(request)
        self._metrics_after.process_request(request)
        request.prometheus_after_middleware_event = started  # type: ignore[attr-defined]
        try:
            actor = Actor.for_user(user)
            result = entry_post(
                owner_id=fields["owner_id"],
                operation=fields["operation"],
                nonce=fields["nonce"],
                app=route.view.app_label,
                actor=actor,
                amount=fields["amount"],
                metadata=fields["metadata"],
                direct=True,
            )
        except Exception as exc:  # noqa: BLE001 - answered as DRF's handler would
            response = self._error(route, request, exc)
        else:
            if result.replayed:
                response = Response(
                    entry_data(result.entry), status=200, headers={REPLAY_HEADER: "true"}
                )
            else:
                response = Response(entry_data(result.entry), status=201)
            response = self._render(route, request, response)
        # The response phase of the middleware, innermost first.
        response = self._metrics_after.process_response(request, response)
        response = self._xframe.process_response(request, response)
        response = self._common.process_response(request, response)
        response = self._security.process_response(request, response)
        end_request_log(request, response, started)
        return self._metrics_before.process_response(request, response)

    def _hand_over(self, request: HttpRequest, environ: dict) -> None:
        """Send a counted request to the full stack, with its count."""
        precounted = getattr(request, "_ratelimit_precounted", None)
        if precounted is not None:
            environ[HANDED_OVER] = (precounted, request._ratelimit_fetched)  # type: ignore[attr-defined]
        environ["HTTP_X_REQUEST_ID"] = request.request_id  # type: ignore[attr-defined]
        FAST_POSTS.labels("handed_over").inc()
        raise _HandOver

    def _render(self, route: _Route, request: HttpRequest, response: Response) -> Response:
        """What DRF's ``finalize_response`` and rendering do for a JSON answer."""
        response.accepted_renderer = self._renderer
        response.accepted_media_type = _JSON
        response.renderer_context = {
            "view": route.view,
            "args": (),
            "kwargs": {},
            "request": request,
        }
        for key, value in route.headers:
            if key == "Vary":
                patch_vary_headers(response, [value])
            else:
                response[key] = value
        response.render()
        FAST_POSTS.labels("served").inc()
        return response

    def _error(self, route: _Route, request: HttpRequest, exc: Exception) -> Any:
        context = {"view": route.view, "args": (), "kwargs": {}, "request": request}
        response = exception_handler(exc, context)
        if response is None:
            # Not an API error: Django's 500, as the full stack answers it.
            self._metrics_after.process_exception(request, exc)
            FAST_POSTS.labels("served").inc()
            return response_for_exception(request, exc)
        response.exception = True
        return self._render(route, request, response)
