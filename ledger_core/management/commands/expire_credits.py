"""Post the CREDIT_EXPIRY entries of credit lots past their expiry.

Nothing depends on it for correctness: from a lot's ``expires_at`` on, reads,
spends and holds leave its rest out, and the owner's next write posts the
entry. The sweeper posts it for owners who do not write again, so the history
and the balance rows say what happened. Idempotent, and safe to run from
several places at once: each sweep holds the owners' balance rows and expires
only what a lot still holds, so every lot's rest leaves the balance once.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ledger_core.services import due_lots_sweep


class Command(BaseCommand):
    help = "Expire credit lots past their expiry (CREDIT_EXPIRY entries); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            type=float,
            metavar="SECONDS",
            help="keep running, sweeping every SECONDS (a long-running worker)",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options["loop"]
        progress = not options["no_progress"] and self.stderr.isatty()
        while True:
            started = time.perf_counter()
            settled = 0
            while swept := due_lots_sweep():
                settled += swept
                if progress:
                    self.stderr.write(f"\r{settled} lots expired", style_func=str, ending="")
            if progress and settled:
                self.stderr.write("", style_func=str)
            elapsed = time.perf_counter() - started
            self.stdout.write(f"{settled} lots expired in {elapsed:.2f}s")
            if not interval:
                return
            time.sleep(interval)
