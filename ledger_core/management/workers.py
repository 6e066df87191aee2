"""What the long-running commands (sweepers, webhook delivery, the verifier) share: the
options ``--loop SECONDS`` and, for those with gauges of their own,
``--metrics-port``, and the loop itself (``run``)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import InterfaceError, OperationalError, close_old_connections
from prometheus_client import start_http_server

from ledger_core.circuit import Circuit

logger = logging.getLogger("ledger_core.workers")


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
    """Serve this process's Prometheus metrics if ``--metrics-port`` was given.
    Only a ``--loop`` worker lives long enough to be scraped: a single pass
    with a metrics port is refused rather than serving nobody."""
    if not options.get("metrics_port"):
        return
    if options.get("loop") is None:
        raise CommandError(
            "--metrics-port serves a --loop worker's metrics to Prometheus; a single pass "
            "ends before any scrape: add --loop SECONDS, or leave --metrics-port out"
        )
    start_http_server(options["metrics_port"], addr=options["metrics_address"])


def run(interval: float | None, one_pass: Callable[[], bool], *, name: str) -> None:
    """``one_pass`` once (no ``--loop``), or for ever: again at once when it
    returns True (more work is waiting), else after ``interval`` seconds.

    In a loop, a lost or unreachable database ends only the pass: the outage
    is logged once (and its end), the broken connection is dropped before the
    next pass, which reconnects; so a PostgreSQL restart or fail-over does not
    stop the worker. Every pass is a transaction or several, so a pass cut
    short leaves nothing half done. Without ``--loop`` the error propagates:
    the exit status tells whoever ran the command."""
    outage = (
        Circuit("database", logger, f"{name} tries again every {interval:g}s") if interval else None
    )
    while True:
        try:
            busy = one_pass()
        except (OperationalError, InterfaceError) as exc:
            if outage is None:
                raise
            outage.trip(exc, "a pass")
            busy = False
        else:
            if outage is not None:
                outage.reset()
        if not interval:
            return
        if not busy:
            time.sleep(interval)
        # Between passes, as between requests: a connection that failed or is
        # older than CONN_MAX_AGE is closed, and the next pass opens a new one.
        close_old_connections()
