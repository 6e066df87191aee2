"""Deliver the event feed to webhook subscriptions (ledger_core.webhooks).

Several workers may run at once: each subscription is delivered by one of
them at a time (an advisory lock), in the feed's order, at least once.
``--loop SECONDS`` keeps it running; ``--metrics-port`` serves
``ledger_webhook_deliveries_total{result}`` and the feed lag per
subscription for Prometheus.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import Counter, Gauge

from ledger_core.management.workers import add_worker_arguments, run, serve_metrics
from ledger_core.webhooks import BATCH, deliver_once, due_subscriptions

DELIVERIES = Counter(
    "ledger_webhook_deliveries", "Webhook delivery attempts, by result.", ["result"]
)
LAG = Gauge(
    "ledger_webhook_lag_seconds",
    "Age of the oldest event a subscription has not acknowledged yet (0: caught up).",
    ["subscription"],
)
LAG_MAX = Gauge("ledger_webhook_lag_max_seconds", "The largest lag of any active subscription.")
for _result in ("delivered", "failed", "disabled"):
    DELIVERIES.labels(_result)  # exported from the start, at 0


class Command(BaseCommand):
    help = "Deliver the event feed to webhook subscriptions (at least once, in order)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_worker_arguments(
            parser, loop_help="keep running, pausing SECONDS when there is nothing to send"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        serve_metrics(options)
        if options["loop"]:
            # Straight on while events go out; a pause once nothing did.
            run(options["loop"], lambda: self.pass_once() > 0, name="webhook delivery")
        else:
            self.stdout.write(f"{self.pass_once()} events delivered")

    def pass_once(self) -> int:
        """One delivery attempt per subscription; how many events were acknowledged."""
        sent = 0
        lags = [0.0]
        for subscription in due_subscriptions():
            delivery = deliver_once(subscription)
            if delivery.result in ("busy", "waiting"):
                continue
            if delivery.result != "idle":
                DELIVERIES.labels(delivery.result).inc()
            caught_up = delivery.result == "idle" or (
                delivery.result == "delivered" and delivery.events < BATCH
            )
            lag = 0.0 if caught_up else delivery.lag_seconds
            LAG.labels(str(subscription)).set(lag)
            lags.append(lag)
            if delivery.result == "delivered":
                sent += delivery.events
        LAG_MAX.set(max(lags))
        return sent
