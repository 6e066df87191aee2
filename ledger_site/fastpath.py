"""The WSGI handler, with a fast lane for single posts and balance reads.

``POST /api/<app>/ledger/`` and ``GET /api/<app>/ledger/<owner_id>/`` are the
requests every consumer app sends on its hot path. Through Django's handler,
its eleven middleware and DRF's dispatch, the framework around them costs more
than the work itself (docs/performance.md). ``LedgerWSGIHandler`` answers
their common form directly, with the parts the full stack uses: the JWT
authenticator, the rate limiter's count, the viewset's own ``create`` and
``retrieve``, DRF's JSON renderer, the site's exception handler, Django's
security, clickjacking and common middleware for the response headers, the
request log line and the request metrics. Tests send the same requests both
ways over HTTP and compare status, headers and body
(tests/ledger_site/test_fastpath.py).

What the fast lane takes: a POST to a ledger viewset's create route or a GET
of its retrieve route (the viewset and the site configured as shipped), no
query string, ``Accept`` absent, ``*/*`` or ``application/json``, no cookies,
a valid bearer access token, a host the site serves and (with HTTPS enforced)
a secure request; for a post, ``Content-Type: application/json`` and a body
whose fields have the plain JSON types of a post. Everything else goes to
Django unchanged, before anything is counted or stored.

Once the rate limiter has counted a request, a refusal there or by
authentication (inactive or deleted user) is handed to Django with that count
attached (``ledger_site.ratelimit.HANDED_OVER``), so it is counted once and
answered by DRF as always. Ledger refusals (400/403/409) and database faults
are answered here by DRF's renderer and the site's exception handler.

``LEDGER_FAST_POST = False`` turns the fast lane off. It also stays off under
``DEBUG`` and whenever the middleware list or the request-level settings it
reproduces differ from those it was written for.
"""

from __future__ import annotations

import copy
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

from ledger_core.api.exceptions import exception_handler
from ledger_core.api.serializers import simple_post_item
from ledger_core.api.views import LedgerViewSet

from .jwt import LedgerJWTAuthentication
from .middleware import (
    MetricsAfterMiddleware,
    MetricsBeforeMiddleware,
    begin_request_log,
    end_request_log,
)
from .negotiation import LedgerContentNegotiation
from .ratelimit import HANDED_OVER, RateLimit, precount_for_view

FAST_POSTS = Counter(
    "ledger_fast_posts",
    "Single posts to a ledger create route: answered by the fast lane (served), "
    "sent to the full stack before any side effect (passed), or after the rate "
    "limiter counted them (handed_over).",
    ["outcome"],
)
FAST_READS = Counter(
    "ledger_fast_reads",
    "Balance reads: answered by the fast lane (served), sent to the full stack "
    "before any side effect (passed), or after being counted (handed_over).",
    ["outcome"],
)

#: The site's MIDDLEWARE as the fast lane was written for it (a deliberate copy
#: of the list in settings): with any other list the lane is off, so a new
#: middleware must be reviewed here first. For the requests the lane takes, the
#: metrics, request-log, security, common and clickjacking middleware are
#: reproduced (their response phase is Django's own code); WhiteNoise serves
#: only static paths; without cookies and with bearer authentication, the
#: session, CSRF, authentication and messages middleware change nothing.
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
    "retrieve",
    "_readable_owner",
    "ratelimit_fetch",
)
_JSON = "application/json"
_ACCEPTED = frozenset({"*/*", _JSON})
_MAX_ROUTES = 256


class _HandOver(Exception):
    """The full stack answers this request."""


@dataclasses.dataclass(frozen=True)
class _Route:
    """A plain ledger viewset's create (POST) or retrieve (GET) route."""

    view: LedgerViewSet
    headers: tuple[tuple[str, str], ...]
    counter: Any


def _ignore(request: HttpRequest) -> None:
    return None


def _viewset_is_plain(cls: type) -> bool:
    """True if ``cls`` serves posts and balance reads exactly as ``LedgerViewSet`` does."""
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
        and cls.versioning_class is None
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
    """Django's WSGI handler; single posts and balance reads take the fast lane."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = _site_is_plain()
        self._views: dict[Any, _Route | None] = {}
        self._post_paths: dict[str, tuple[Any, _Route | None]] = {}
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
        found = self._route(environ) if self.fast else None
        if found is None:
            return super().__call__(environ, start_response)
        route, match = found
        try:
            return self._serve(route, match, environ, start_response)
        except _HandOver:
            return super().__call__(environ, start_response)

    # --- what the fast lane takes ------------------------------------------

    def _route(self, environ: dict) -> tuple[_Route, Any] | None:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if method == "POST" and path.endswith("/ledger/"):
            try:
                match, route = self._post_paths[path]
            except KeyError:
                match = _resolve(path)
                route = self._plain_route(match, "post", "create")
                if len(self._post_paths) < _MAX_ROUTES:
                    self._post_paths[path] = (match, route)
            if route is None:
                return None
            if environ.get("CONTENT_TYPE") != _JSON or "HTTP_TRANSFER_ENCODING" in environ:
                route.counter("passed").inc()
                return None
        elif method == "GET" and _one_segment_after_ledger(path):
            match = _resolve(path)
            route = self._plain_route(match, "get", "retrieve")
            if route is None or set(match.kwargs) != {"owner_id"}:
                return None
        else:
            return None
        if (
            environ.get("QUERY_STRING")
            or environ.get("HTTP_ACCEPT", "*/*").strip() not in _ACCEPTED
            or "HTTP_COOKIE" in environ
            or not environ.get("HTTP_AUTHORIZATION", "").startswith("Bearer ")
        ):
            route.counter("passed").inc()
            return None
        return route, match

    def _plain_route(self, match: Any, method: str, action: str) -> _Route | None:
        """The route of ``match`` if it is ``action`` of a plain ledger viewset."""
        if match is None:
            return None
        func = match.func
        try:
            route = self._views[func]
        except KeyError:
            route = self._views[func] = self._route_for(func)
        if route is None or route.view.action_map.get(method) != action:
            return None
        return route

    def _route_for(self, func: Any) -> _Route | None:
        cls = getattr(func, "cls", None)
        actions = dict(getattr(func, "actions", None) or {})
        action = {"post": "create", "get": "retrieve"}.get(next(iter(actions), ""))
        if action is None or actions.get(next(iter(actions))) != action:
            return None
        if not _viewset_is_plain(cls):
            return None
        # The view as DRF's ``ViewSetMixin.as_view`` builds it for a request.
        view = cls(**getattr(func, "initkwargs", {}))
        if "get" in actions and "head" not in actions:
            actions["head"] = actions["get"]
        view.action_map = actions
        for method, name in actions.items():
            setattr(view, method, getattr(view, name))
        view.action = action
        view.args, view.kwargs = (), {}
        view.format_kwarg = None
        counter = FAST_POSTS.labels if action == "create" else FAST_READS.labels
        return _Route(
            view=view, headers=tuple(view.default_response_headers.items()), counter=counter
        )

    # --- serving -------------------------------------------------------------

    def _serve(self, route: _Route, match: Any, environ: dict, start_response: Any) -> Any:
        data = self._body(route, environ) if route.view.action == "create" else None
        request = self.request_class(environ)
        try:
            request.get_host()
        except DisallowedHost:
            self._pass(route)
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            self._pass(route)
        try:
            header = self._authenticator.get_header(request)
            raw_token = self._authenticator.get_raw_token(header) if header else None
            if raw_token is None:
                self._pass(route)
            self._authenticator.get_validated_token(raw_token)
        except (APIException, TokenError):
            self._pass(route)

        # From here on, as Django's handler would: the request has started.
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        set_urlconf(settings.ROOT_URLCONF)
        request.resolver_match = match
        started = begin_request_log(request)
        try:
            response = self._respond(route, match, request, data, environ, started)
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

    def _pass(self, route: _Route) -> None:
        route.counter("passed").inc()
        raise _HandOver

    def _body(self, route: _Route, environ: dict) -> dict[str, Any]:
        """The post's body, if it is plain JSON with fields of the right types
        (what ``LedgerViewSet.create`` takes without its serializer)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length <= 0 or (limit is not None and length > limit):
            self._pass(route)
        body = environ["wsgi.input"].read(length)
        # Whatever happens next, Django can read the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            data = json.loads(
                body.decode(settings.DEFAULT_CHARSET),
                parse_constant=strict_constant if self._strict else None,
            )
        except ValueError:
            self._pass(route)
        if simple_post_item(data) is None:
            self._pass(route)
        return data

    def _respond(
        self,
        route: _Route,
        match: Any,
        request: HttpRequest,
        data: dict | None,
        environ: dict,
        started: float,
    ) -> Any:
        view = copy.copy(route.view)
        view.kwargs = match.kwargs
        view.request = request
        request.parser_context = {"view": view}  # type: ignore[attr-defined]
        try:
            # Writes are counted here, with the user's cached state.
            user, _ = self._authenticator.authenticate(request)
        except Exception:  # noqa: BLE001 - refused, or the database is down: DRF answers
            self._hand_over(route, request, environ)
        request.user = user
        if getattr(settings, "RATELIMIT_ENABLE", True):
            if not hasattr(request, "_ratelimit_precounted") and not precount_for_view(
                request, view
            ):
                self._hand_over(route, request, environ)
            usages = request._ratelimit_precounted[2]  # type: ignore[attr-defined]
            if usages is not None and any(usage["should_limit"] for usage in usages):
                self._hand_over(route, request, environ)
            if data is None:
                request.ledger_prefetched = request._ratelimit_fetched  # type: ignore[attr-defined]
        # The request metrics, from the time the request started.
        self._metrics_before.process_request(request)
        self._metrics_after.process_request(request)
        request.prometheus_after_middleware_event = started  # type: ignore[attr-defined]
        try:
            # The viewset's own action, on the parsed body (what DRF's
            # ``request.data`` would hold).
            if data is None:
                response = view.retrieve(request, view.kwargs["owner_id"])
            else:
                request.data = data  # type: ignore[attr-defined]
                response = view.create(request)
            response = self._render(route, view, request, response)
        except Exception as exc:  # noqa: BLE001 - answered as DRF's handler would
            response = self._error(route, view, request, exc)
        # The response phase of the middleware, innermost first.
        response = self._metrics_after.process_response(request, response)
        response = self._xframe.process_response(request, response)
        response = self._common.process_response(request, response)
        response = self._security.process_response(request, response)
        end_request_log(request, response, started)
        return self._metrics_before.process_response(request, response)

    def _hand_over(self, route: _Route, request: HttpRequest, environ: dict) -> None:
        """Send a started request to the full stack, with its count if it was counted."""
        precounted = getattr(request, "_ratelimit_precounted", None)
        if precounted is not None:
            environ[HANDED_OVER] = (precounted, request._ratelimit_fetched)  # type: ignore[attr-defined]
        environ["HTTP_X_REQUEST_ID"] = request.request_id  # type: ignore[attr-defined]
        route.counter("handed_over").inc()
        raise _HandOver

    def _render(
        self, route: _Route, view: LedgerViewSet, request: HttpRequest, response: Response
    ) -> Response:
        """What DRF's ``finalize_response`` and rendering do for a JSON answer."""
        response.accepted_renderer = self._renderer
        response.accepted_media_type = _JSON
        response.renderer_context = {
            "view": view,
            "args": (),
            "kwargs": view.kwargs,
            "request": request,
        }
        for key, value in route.headers:
            if key == "Vary":
                patch_vary_headers(response, [value])
            else:
                response[key] = value
        response.render()
        route.counter("served").inc()
        return response

    def _error(
        self, route: _Route, view: LedgerViewSet, request: HttpRequest, exc: Exception
    ) -> Any:
        context = {"view": view, "args": (), "kwargs": view.kwargs, "request": request}
        response = exception_handler(exc, context)
        if response is None:
            # Not an API error: Django's 500, as the full stack answers it.
            self._metrics_after.process_exception(request, exc)
            route.counter("served").inc()
            return response_for_exception(request, exc)
        response.exception = True
        return self._render(route, view, request, response)


def _one_segment_after_ledger(path: str) -> bool:
    """``.../ledger/<one segment>/``: the shape of a retrieve route. History
    (``.../entries/``) and every other GET go to Django without a look-up here."""
    _, found, rest = path.rpartition("/ledger/")
    return bool(found) and rest.endswith("/") and rest.count("/") == 1 and len(rest) > 1


def _resolve(path: str) -> Any:
    if not path.isascii():
        return None
    try:
        return resolve(path)
    except Resolver404:
        return None
