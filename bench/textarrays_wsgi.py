"""`make bench BENCH_ARGS=--variant-app=bench.textarrays_wsgi:application`:
the site with every query parameter bound in psycopg's text form (``%b``
placeholders sent as ``%s``), the "without" side of the same-run A/B of
binding the set-based statements' arrays in binary. Never serve this."""

import re

from django.db import connection

from ledger_site.wsgi import application as site

_BINARY = re.compile(r"%(\([a-z_]+\))?b")


def _as_text(execute, sql, params, many, context):
    return execute(_BINARY.sub(r"%\1s", sql), params, many, context)


def application(environ, start_response):
    # The view runs (and queries) before the response is returned.
    with connection.execute_wrapper(_as_text):
        return site(environ, start_response)


__all__ = ["application"]
