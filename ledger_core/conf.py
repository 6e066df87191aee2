"""The ledger's settings: one ``LEDGER_*`` namespace with its defaults stated once.

Design decision: like DRF's ``api_settings``, values are read from Django's
settings at use, never at import, and forgotten on ``setting_changed``, so
``override_settings`` works in tests and nothing needs reloading. Code reads
``ledger_settings.MAX_ENTRY_AMOUNT``, not ``getattr(settings, ...)``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

PREFIX = "LEDGER_"

DEFAULTS: dict[str, Any] = {
    # Per-site overrides of operation amounts/policies, e.g. {"DAILY_REWARD": 2}.
    "OPERATION_CONFIG": {},
    # Largest absolute amount of one entry (manager grants included).
    "MAX_ENTRY_AMOUNT": 1_000_000,
    # The app label management commands post as when --app is not given.
    "COMMAND_APP": "content",
    # Webhooks: a subscription failing for longer than this (seconds) is
    # disabled; retries back off exponentially up to the cap (seconds); a
    # delivery waits this long to connect, then for the answer's whole head.
    "WEBHOOK_DISABLE_AFTER": 24 * 3600,
    "WEBHOOK_BACKOFF_MAX": 600,
    "WEBHOOK_TIMEOUT": 10,
    # Webhooks go to public addresses only: a URL whose host is (or resolves
    # to) a loopback, private, link-local or otherwise non-global address is
    # refused, so a manager cannot make the server call its own network.
    # True allows them (receivers on an internal network, tests).
    "WEBHOOK_ALLOW_PRIVATE": False,
    # An HTTP proxy webhooks go through, "http://[user:password@]host:port"
    # (it must allow CONNECT to the destinations' addresses); "" connects directly.
    "WEBHOOK_PROXY": "",
    # The longest an event-feed long poll may hold a worker (seconds); a
    # larger ``wait`` is cut to it.
    "EVENTS_MAX_WAIT": 30,
    # How many event-feed requests may long-poll at once, across every worker
    # of the site (each one holds a worker while it waits); one beyond that
    # answers at once, as without ``wait``. 0: no long polls.
    "EVENTS_MAX_WAITING": 2,
    # Entries and balances are rendered by ``plain()`` functions that a test
    # holds equal to DRF's field-by-field output; False renders them DRF's
    # way (slower; the A/B of docs/performance.md).
    "PLAIN_REPRESENTATION": True,
}


class LedgerSettings:
    """Attribute access to ``LEDGER_<NAME>`` settings, falling back to ``DEFAULTS``."""

    def __init__(self, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._cached: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Unknown ledger setting: {PREFIX}{name}")
        try:
            return self._cached[name]
        except KeyError:
            value = getattr(settings, PREFIX + name, self.defaults[name])
            self._cached[name] = value
            return value

    def reload(self) -> None:
        self._cached.clear()


ledger_settings = LedgerSettings(DEFAULTS)


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(PREFIX):
        ledger_settings.reload()


setting_changed.connect(_reload, dispatch_uid="ledger_core.conf.reload")
