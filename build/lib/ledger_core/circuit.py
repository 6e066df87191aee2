"""A circuit breaker for optional dependencies (Redis).

When a call to the dependency fails, callers skip it for a short while
instead of waiting on a dead socket with every request, and the outage is
logged once: when it starts and when it ends, not once per request.
"""

from __future__ import annotations

import logging
import threading
import time

OPEN_SECONDS = 2.0


class Circuit:
    """``is_open()`` while a failure is recent; ``tripped`` until ``reset()``."""

    def __init__(self, name: str, logger: logging.Logger, consequence: str) -> None:
        self.name = name
        self.logger = logger
        self.consequence = consequence
        self.until = 0.0  # 0: closed; else monotonic time until which callers skip
        self._lock = threading.Lock()

    @property
    def tripped(self) -> bool:
        """A failure has happened and no call has succeeded since."""
        return self.until != 0.0

    def is_open(self) -> bool:
        """Skip the dependency now (a failure within the last ``OPEN_SECONDS``)."""
        return self.until != 0.0 and time.monotonic() < self.until

    def trip(self, exc: Exception, action: str = "call") -> None:
        """Record a failure; the first one of an outage is logged."""
        with self._lock:
            first = self.until == 0.0
            self.until = time.monotonic() + OPEN_SECONDS
        if first:
            self.logger.warning(
                "%s unavailable (%s failed: %s: %s); %s",
                self.name,
                action,
                type(exc).__name__,
                exc,
                self.consequence,
            )

    def reset(self, detail: str = "") -> None:
        """Record a success; the end of an outage is logged."""
        if self.until == 0.0:
            return
        with self._lock:
            was_tripped, self.until = self.until != 0.0, 0.0
        if was_tripped:
            self.logger.warning("%s available again%s", self.name, detail)
