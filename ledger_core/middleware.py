"""A write asked as a dry run of a view that has none is refused, not stored.

``?dry_run=true`` asks a write to be checked and answered without storing
anything. Only the views that say so have one: a view class lists them in
``dry_run_actions`` (a viewset's action names, or a plain view's HTTP
methods in lower case), as ``LedgerViewSet`` does for single posts and holds,
and reads the parameter itself. Any other write (a batch, a reversal, a
consumer app's own endpoints, registration...) would otherwise be stored for
real while its client believes nothing happened, so ``DryRunMiddleware``
answers it 400 ``invalid`` (``errors.dry_run``) before the view runs.
``?dry_run=false`` (or ``0``, any case) is the write itself.

It sits in ``MIDDLEWARE`` (a system check says so when it is missing) rather
than in a base class, so that an app's views need nothing to be covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.permissions import SAFE_METHODS

from .api.exceptions import error_body
from .api.views import DRY_RUN_VALUES

REFUSAL = "Only single posts and holds have a dry run; nothing was stored."


def has_dry_run(view_func: Callable[..., Any], method: str) -> bool:
    """Whether the view serving ``method`` says it has a dry run. DRF's
    ``as_view()`` functions carry their class (``cls``) and, for a viewset,
    the action of each method (``actions``)."""
    actions = getattr(view_func, "actions", None)
    name = actions.get(method) if actions else method
    return name in getattr(getattr(view_func, "cls", None), "dry_run_actions", ())


class DryRunMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        if request.method in SAFE_METHODS:
            return None
        try:
            raw = request.GET.get("dry_run")  # the last one, as DRF's query_params read it
        except SuspiciousOperation as exc:  # too many fields: nobody can tell
            return JsonResponse(error_body("invalid", str(exc)), status=400)
        if raw is None or DRY_RUN_VALUES.get(raw.lower()) is False:
            return None
        if has_dry_run(view_func, request.method.lower()):
            return None  # the view reads it (and refuses a value it does not know)
        body = error_body("invalid", f"dry_run: {REFUSAL}", errors={"dry_run": [REFUSAL]})
        return JsonResponse(body, status=400)
