"""Post the CREDIT_EXPIRY entries of credit lots past their expiry (and
release holds past theirs).

Nothing depends on it for correctness: from a lot's ``expires_at`` on, reads,
spends and holds leave its rest out, and the owner's next write posts the
entry. The sweeper posts it for owners who do not write again, so the history
and the balance rows say what happened. Idempotent, and safe to run from
several places at once: each sweep holds the owners' balance rows and expires
only what a lot still holds, so every lot's rest leaves the balance once.

``--loop SECONDS`` keeps it running as a worker; ``--metrics-port`` then
serves its gauges (sweep lag, last pass) for Prometheus, which alerts when
the sweeper falls behind or stops.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import Gauge

from ledger_core.management.workers import add_worker_arguments, run, serve_metrics
from ledger_core.services import due_holds_sweep, due_lots_sweep, sweep_lag_seconds

# The sweeper's own gauges, served by --metrics-port (the web's /metrics has
# no business reporting a sweeper's progress).
SWEEP_LAG = Gauge(
    "ledger_credit_sweep_lag_seconds",
    "Age of the oldest lot past its expiry that still held credits when a sweep began.",
)
SWEEP_LAST_RUN = Gauge(
    "ledger_credit_sweep_last_run_timestamp_seconds",
    "When the sweeper last finished a pass (Unix time).",
)


class Command(BaseCommand):
    help = "Expire credit lots (and holds) past their expiry; idempotent, safe concurrently."

    def add_arguments(self, parser: CommandParser) -> None:
        add_worker_arguments(
            parser, loop_help="keep running, sweeping every SECONDS (a long-running worker)"
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        serve_metrics(options)
        progress = not options["no_progress"] and self.stderr.isatty()
        run(options["loop"], lambda: self.sweep(progress), name="the credit sweeper")

    def sweep(self, progress: bool) -> bool:
        """One pass: every lot and hold due now."""
        started = time.perf_counter()
        SWEEP_LAG.set(sweep_lag_seconds())
        settled = 0
        while swept := due_lots_sweep():
            settled += swept
            if progress:
                self.stderr.write(f"\r{settled} lots expired", style_func=str, ending="")
        if progress and settled:
            self.stderr.write("", style_func=str)
        holds = sum(iter(due_holds_sweep, 0))
        elapsed = time.perf_counter() - started
        SWEEP_LAST_RUN.set(time.time())
        self.stdout.write(
            f"{settled} lots expired, {holds} expired holds released in {elapsed:.2f}s"
        )
        return False
