"""Options shared by the long-running commands (sweepers, webhook delivery):
``--loop SECONDS`` and, for those with gauges of their own, ``--metrics-port``."""

from __future__ import annotations

import argparse
import math
from typing import Any

from django.core.management.base import CommandParser
from prometheus_client import start_http_server


def seconds(value: str) -> float:
    """A pause for ``--loop``: a finite number of seconds above 0."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return number


def port(value: str) -> int:
    """A TCP port for ``--metrics-port``: 1-65535."""
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (1-65535)")
    return int(value)


def add_worker_arguments(parser: CommandParser, *, loop_help: str, metrics: bool = True) -> None:
    """``--loop SECONDS`` (help ``loop_help``) and, with ``metrics``,
    ``--metrics-port`` / ``--metrics-address``."""
    parser.add_argument("--loop", type=seconds, metavar="SECONDS", help=loop_help)
    if metrics:
        parser.add_argument(
            "--metrics-port", type=port, help="serve Prometheus metrics on this port"
        )
        parser.add_argument(
            "--metrics-address", default="127.0.0.1", help="address for --metrics-port"
        )


def serve_metrics(options: dict[str, Any]) -> None:
    """Serve this process's Prometheus metrics if ``--metrics-port`` was given."""
    if options.get("metrics_port"):
        start_http_server(options["metrics_port"], addr=options["metrics_address"])
