"""WSGI entry point (gunicorn serves ``ledger_site.wsgi:application``).

Django's handler, with the fast lane for single ledger posts and balance
reads (``ledger_site.fastpath``).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_site.settings")
django.setup(set_prefix=False)

from ledger_site.fastpath import LedgerWSGIHandler  # noqa: E402 - needs the apps loaded

application = LedgerWSGIHandler()
