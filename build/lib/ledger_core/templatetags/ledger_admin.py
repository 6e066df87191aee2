"""A date hierarchy for the entry list that never scans the entries table.

Django's own tag asks the database for MIN/MAX and the distinct years, months
or days of the (possibly unfiltered) list: full scans on a large ledger. This
one reads only the first and last entry by primary key and lists calendar
months and days without a query.
"""

from __future__ import annotations

import calendar
import datetime

from django import template
from django.utils import timezone

from ledger_core.models import LedgerEntry

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def ledger_date_hierarchy(cl):
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(f) for f in (year_field, month_field, day_field))

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    def as_int(value):
        if isinstance(value, list):
            value = value[-1] if value else None
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    year, month, day = as_int(year), as_int(month), as_int(day)
    if year and month and day:
        chosen = datetime.date(year, month, day)
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": f"{chosen:%B %Y}",
            },
            "choices": [{"title": f"{chosen:%B %-d}"}],
        }
    if year and month:
        days = calendar.monthrange(year, month)[1]
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d}),
                    "title": f"{datetime.date(year, month, d):%B %-d}",
                }
                for d in range(1, days + 1)
            ],
        }
    if year:
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_field: year, month_field: m}),
                    "title": f"{datetime.date(year, m, 1):%B %Y}",
                }
                for m in range(1, 13)
            ],
        }
    first = LedgerEntry.objects.order_by("id").values_list("created_at", flat=True).first()
    last = LedgerEntry.objects.order_by("-id").values_list("created_at", flat=True).first()
    if first is None:
        return {"show": False}
    start, end = timezone.localtime(first).year, timezone.localtime(last).year
    return {
        "show": True,
        "choices": [
            {"link": link({year_field: y}), "title": str(y)} for y in range(start, end + 1)
        ],
    }
