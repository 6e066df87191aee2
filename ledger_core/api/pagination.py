"""Keyset (cursor) pagination, newest first, with bad input answered as 400."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class StrictCursorPagination(CursorPagination):
    """DRF's cursor pagination, except that a mangled ``cursor`` or a
    ``page_size`` that is not a positive integer is a 400 ``invalid`` (DRF
    answers 404 to the first and ignores the second). A ``page_size`` above
    ``max_page_size`` is lowered to it, as in DRF. Consumer apps' lists use it
    too, so every list of the site treats its query the same way."""

    ordering = "-id"
    page_size_query_param = "page_size"
    #: ``page_size`` in the schema (views that paginate by hand use it too).
    page_size_schema = {"type": "integer", "minimum": 1}

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            # A cursor the client mangled is bad input, not a missing resource.
            raise ValidationError({"cursor": ["Invalid cursor."]}) from None

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and (not (raw.isascii() and raw.isdigit()) or int(raw) < 1):
            raise ValidationError({"page_size": ["Must be a positive integer."]})
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = dict(self.page_size_schema)
                parameter["description"] = self.page_size_description()
        return parameters

    @classmethod
    def page_size_description(cls) -> str:
        if cls.max_page_size is None:
            return f"1 or more, default {cls.page_size}"
        return f"1-{cls.max_page_size} (more is lowered to it), default {cls.page_size}"


class EntryCursorPagination(StrictCursorPagination):
    """Entry history and holds: 50 a page, at most 200."""

    page_size = 50
    max_page_size = 200
