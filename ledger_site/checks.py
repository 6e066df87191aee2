"""The site's own system checks (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_password_reset_url(app_configs: Any = None, **kwargs: Any) -> list:
    """A reset page that is not told the link's uid and token cannot use it:
    every mailed link would be dead."""
    page = settings.PASSWORD_RESET_URL
    if not page or ("{uid}" in page and "{token}" in page):
        return []
    return [
        Error(
            "PASSWORD_RESET_URL has no {uid} or no {token}: the reset links mailed would not work.",
            hint="e.g. https://app.example.com/reset?uid={uid}&token={token}, or leave it empty "
            "for mail that gives the API call.",
            id="site.E001",
        )
    ]


@register()
def check_email_verify_url(app_configs: Any = None, **kwargs: Any) -> list:
    """A verification page that is not told the token cannot use it."""
    page = settings.EMAIL_VERIFY_URL
    if not page or "{token}" in page:
        return []
    return [
        Error(
            "EMAIL_VERIFY_URL has no {token}: the verification links mailed would not work.",
            hint="e.g. https://app.example.com/verify?token={token}, or leave it empty for "
            "mail that gives the API call.",
            id="site.E002",
        )
    ]
