"""Who is moving credits: a user, a manager, or the system itself.

Services take an ``Actor`` rather than a request or a user so that views,
admin actions and management commands share one permission model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

POST_ANY_PERMISSION = "ledger_core.post_any_entry"
VIEW_ANY_PERMISSION = "ledger_core.view_any_ledger"


@dataclasses.dataclass(frozen=True)
class Actor:
    """The caller of a service.

    ``owner_id``: the ledger this actor owns (None for the system).
    ``can_post_any``: a manager (``ledger_core.post_any_entry``).
    ``can_view_any``: may read every ledger (auditors and managers).
    ``is_system``: internal callers (registration, commands); may post anything.
    """

    name: str
    owner_id: str | None = None
    can_post_any: bool = False
    can_view_any: bool = False
    is_system: bool = False

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(name=name, is_system=True, can_post_any=True, can_view_any=True)

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        """The actor for an authenticated Django user (owner id = username)."""
        can_post_any = bool(user.has_perm(POST_ANY_PERMISSION))
        return cls(
            name=f"user:{user.pk}:{user.get_username()}"[:200],
            owner_id=user.get_username(),
            can_post_any=can_post_any,
            can_view_any=can_post_any or bool(user.has_perm(VIEW_ANY_PERMISSION)),
        )

    def may_view(self, owner_id: str) -> bool:
        return self.can_view_any or self.is_system or self.owner_id == owner_id
