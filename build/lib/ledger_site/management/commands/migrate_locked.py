"""``migrate``, one instance at a time.

Several containers starting together would otherwise run the same migrations
concurrently. A PostgreSQL session advisory lock serialises them: the first
applies the migrations, the others wait and then find nothing to do.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

# An arbitrary, fixed 64-bit key for this project's migration lock.
LOCK_KEY = 0x1ED6E12


class Command(BaseCommand):
    help = "Run migrate while holding a database-wide advisory lock."

    def handle(self, *args: Any, **options: Any) -> None:
        with connection.cursor() as cursor:
            self.stdout.write("waiting for the migration lock")
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
            try:
                call_command("migrate", interactive=False, verbosity=options["verbosity"])
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
