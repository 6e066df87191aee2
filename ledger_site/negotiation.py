"""Content negotiation with a shortcut for what API clients send.

DRF's ``DefaultContentNegotiation`` parses the ``Accept`` header and matches it
against every renderer on every request (~3% of a ledger post). A request with
no ``Accept`` header, or ``*/*``, and no format override gets DRF's first
renderer with its own media type whatever the parsing, so that answer is
returned directly; anything else (an empty header included, which DRF answers
with 406) goes through DRF unchanged.
"""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation

_ABSENT = object()


def _accepts_anything(header: Any) -> bool:
    # No header, or exactly "*/*". An empty header is a 406 in DRF, not a shortcut.
    return header is _ABSENT or (isinstance(header, str) and header.strip() == "*/*")


class LedgerContentNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Any, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        if (
            renderers
            and not format_suffix
            and _accepts_anything(request.META.get("HTTP_ACCEPT", _ABSENT))
            and not request.META.get("QUERY_STRING")
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
