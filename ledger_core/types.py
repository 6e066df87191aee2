"""Plain value types shared by the selectors, the cache and the API."""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True)
class ExpiringCredits:
    """Credits of one lot that expire at ``expires_at`` unless spent first."""

    amount: int
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class BalanceView:
    """An owner's balance; an owner without entries has balance 0, version 0."""

    owner_id: str
    balance: int
    version: int
    updated_at: datetime | None
    #: Credits reserved by pending, unexpired holds; ``available`` is the rest.
    held: int = 0
    #: The soonest-expiring lots (up to 5), soonest first.
    expiring: tuple[ExpiringCredits, ...] = ()
    #: The hash of the owner's newest entry (its ``seq`` is ``version``).
    head_hash: str = "0" * 64

    @property
    def seq(self) -> int:
        return self.version

    @property
    def available(self) -> int:
        return max(self.balance - self.held, 0)


@dataclasses.dataclass(frozen=True)
class BalanceAt:
    """An owner's balance as of instant ``at``: after the last entry created at
    or before it (balance 0, version 0 before the first)."""

    owner_id: str
    at: datetime
    balance: int
    version: int
