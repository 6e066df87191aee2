"""Session logins (the admin's and the browsable API's) rate limited like the
token endpoint: per client address and per submitted username, with the
``auth`` rate (``RATE_LIMIT_AUTH``), so that a password cannot be guessed
through a login form either."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from .ratelimit import auth_keys, limited_for


def login_rate_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view`` (a login form), answering a 429 page with ``Retry-After`` to a
    login attempt over the rate. Showing the form is not counted."""

    @functools.wraps(view)
    def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            username = request.POST.get("username", "").strip().lower()[:150] or None
            wait = limited_for(request, "auth", auth_keys(username))
            if wait is not None:
                page = render_to_string(
                    "ledger_site/login_limited.html", {"wait": wait}, request=request
                )
                response = HttpResponse(page, status=429)
                response["Retry-After"] = str(wait)
                return response
        return view(request, *args, **kwargs)

    return limited
