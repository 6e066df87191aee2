"""The site's own system checks (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

#: The pages mailed links lead to: setting, the values it must be told, the
#: check's id, an example.
LINK_PAGES = [
    ("PASSWORD_RESET_URL", ("{uid}", "{token}"), "site.E001",
     "https://app.example.com/reset?uid={uid}&token={token}"),
    ("EMAIL_VERIFY_URL", ("{token}",), "site.E002",
     "https://app.example.com/verify?token={token}"),
]  # fmt: skip


@register()
def check_link_pages(app_configs: Any = None, **kwargs: Any) -> list:
    """A page a mailed link leads to that is not told the link's values
    cannot use them: every link mailed would be dead."""
    problems = []
    for name, needed, check_id, example in LINK_PAGES:
        page = getattr(settings, name)
        missing = [value for value in needed if value not in page]
        if page and missing:
            problems.append(
                Error(
                    f"{name} has no {' or '.join(missing)}: the links mailed would not work.",
                    hint=f"e.g. {example}, or leave it empty for mail that gives the API call.",
                    id=check_id,
                )
            )
    return problems
