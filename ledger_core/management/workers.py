"""Options shared by the long-running commands (sweepers, webhook delivery):
``--loop SECONDS`` and, for those with gauges of their own, ``--metrics-port``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from prometheus_client import start_http_server


def add_worker_arguments(parser: CommandParser, *, loop_help: str, metrics: bool = True) -> None:
    """``--loop SECONDS`` (help ``loop_help``) and, with ``metrics``,
    ``--metrics-port`` / ``--metrics-address``."""
    parser.add_argument("--loop", type=float, metavar="SECONDS", help=loop_help)
    if metrics:
        parser.add_argument(
            "--metrics-port", type=int, help="serve Prometheus metrics on this port"
        )
        parser.add_argument(
            "--metrics-address", default="127.0.0.1", help="address for --metrics-port"
        )


def serve_metrics(options: dict[str, Any]) -> None:
    """Serve this process's Prometheus metrics if ``--metrics-port`` was given."""
    if options.get("metrics_port"):
        start_http_server(options["metrics_port"], addr=options["metrics_address"])
