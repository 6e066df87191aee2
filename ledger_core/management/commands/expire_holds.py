"""Write the status of holds past their expiry and release what they reserved.

Nothing depends on it running: an expired hold stops counting in ``held``
and cannot be captured from ``expires_at`` on, and the owner's next write
releases it. This command tidies up for owners who do not write again
(``status`` in the admin and the database says ``expired``). Idempotent and
safe to run from several places at once: each release holds the owners'
balance rows and marks only holds still pending.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ledger_core.management.workers import add_worker_arguments, run
from ledger_core.services import due_holds_sweep


class Command(BaseCommand):
    help = "Release holds past their expiry (status expired); idempotent, safe concurrently."

    def add_arguments(self, parser: CommandParser) -> None:
        add_worker_arguments(
            parser,
            loop_help="keep running, sweeping every SECONDS (a long-running worker)",
            metrics=False,
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run(options["loop"], self.sweep, name="the hold sweeper")

    def sweep(self) -> bool:
        """One pass: every hold due now."""
        released = 0
        while swept := due_holds_sweep():
            released += swept
        self.stdout.write(f"{released} expired holds released")
        return False
