"""Typed ledger operations and the registry consumer apps declare them in.

Design decision: an operation is a ``models.TextChoices`` member whose *value*
is what the ledger stores (``LedgerEntry.operation`` is a plain CharField, so a
new operation never needs a ``ledger_core`` migration). ``LedgerOperation`` is
an abstract base without members; every concrete subclass must declare the
shared operations, and that is checked when the class is created, not when the
first request arrives. Amounts and policies live beside the class in the
registry and can be overridden per site in ``settings.LEDGER_OPERATION_CONFIG``,
resolved at use (never at import) so ``override_settings`` works.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Literal

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models

from .conf import ledger_settings

SHARED_OPERATIONS: tuple[str, ...] = ("DAILY_REWARD", "SIGNUP_CREDIT", "CREDIT_SPEND", "CREDIT_ADD")

#: Longest operation value ``LedgerEntry.operation`` can store.
OPERATION_MAX_LENGTH = 64

Role = Literal["owner", "manager", "system"]
Limit = Literal["daily", "once"]

OWNER: frozenset[Role] = frozenset({"owner"})
MANAGER: frozenset[Role] = frozenset({"manager"})
OWNER_OR_MANAGER: frozenset[Role] = frozenset({"owner", "manager"})


class OperationClassError(TypeError, ImproperlyConfigured):
    """A ``LedgerOperation`` subclass is malformed (e.g. lacks shared operations)."""


class LedgerOperation(models.TextChoices):
    """Abstract base of every app's operation choices. Declares no members.

    A subclass must declare every operation in ``SHARED_OPERATIONS`` with the
    operation's name as its value (``DAILY_REWARD = "DAILY_REWARD", _("...")``)
    and may add its own.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = {member.name: member.value for member in cls}
        missing = [name for name in SHARED_OPERATIONS if name not in declared]
        if missing:
            raise OperationClassError(
                f"{cls.__qualname__} must declare the shared ledger operations; "
                f"missing: {', '.join(missing)}"
            )
        renamed = [name for name in SHARED_OPERATIONS if declared[name] != name]
        if renamed:
            raise OperationClassError(
                f"{cls.__qualname__}: shared operations must use their name as value; "
                f"wrong value for: {', '.join(renamed)}"
            )


#: The ledger's own operation for undoing an entry; no app declares it.
REVERSAL = "REVERSAL"
#: The ledger's own operation for the unconsumed rest of an expired credit lot.
CREDIT_EXPIRY = "CREDIT_EXPIRY"
#: Operations of the ledger itself: no app declares them, no client posts them.
LEDGER_OPERATIONS = (REVERSAL, CREDIT_EXPIRY)


@dataclasses.dataclass(frozen=True)
class OperationPolicy:
    """How an operation may be posted.

    ``amount``: the configured amount (its sign is the operation's direction).
    ``posters``: roles that may post it: ``owner`` (to their own ledger),
    ``manager`` (``ledger_core.post_any_entry``); the system may post anything.
    ``limit``: ``"daily"`` (once per owner per UTC day), ``"once"`` (once per
    owner) or None. Limits are enforced by a unique key in the database.
    ``direct``: whether the generic ledger endpoint accepts it; False for
    operations an app posts only through its own domain endpoint.
    ``expires_after``: for a credit, the lifetime its credits get when the
    request gives no ``expires_at`` (``timedelta``, seconds, or text such as
    ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``); None: they never expire.
    """

    amount: int | None
    posters: frozenset[Role] = OWNER_OR_MANAGER
    limit: Limit | None = None
    direct: bool = True
    expires_after: timedelta | None = None


#: The longest lifetime a credit may get (about 10 years).
MAX_LIFETIME = timedelta(days=3653)
_LIFETIME_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_lifetime(value: object) -> timedelta:
    """A credit lifetime from a ``timedelta``, whole seconds, or ``"<n><d|h|m|s>"``;
    ``ValueError`` unless it is positive and at most ``MAX_LIFETIME``."""
    if isinstance(value, timedelta):
        lifetime = value
    elif isinstance(value, int) and not isinstance(value, bool):
        lifetime = timedelta(seconds=value)
    elif (
        isinstance(value, str)
        and len(value) > 1
        and value[-1] in _LIFETIME_UNITS
        and value[:-1].isascii()
        and value[:-1].isdigit()
    ):
        lifetime = timedelta(seconds=int(value[:-1]) * _LIFETIME_UNITS[value[-1]])
    else:
        raise ValueError('expected a duration such as "30d", "12h", "90m", "45s" or seconds')
    if not timedelta(0) < lifetime <= MAX_LIFETIME:
        raise ValueError("a lifetime must be positive and at most 10 years")
    return lifetime


SHARED_POLICIES: dict[str, OperationPolicy] = {
    "DAILY_REWARD": OperationPolicy(amount=1, posters=OWNER, limit="daily"),
    "SIGNUP_CREDIT": OperationPolicy(amount=3, posters=MANAGER, limit="once"),
    "CREDIT_SPEND": OperationPolicy(amount=-1, posters=OWNER_OR_MANAGER),
    "CREDIT_ADD": OperationPolicy(amount=10, posters=MANAGER),
}

_POLICY_FIELDS = {f.name for f in dataclasses.fields(OperationPolicy)}


@dataclasses.dataclass(frozen=True, eq=False)
class RegisteredApp:
    """One consumer app's registration: its label, operation class and defaults."""

    label: str
    operations: type[LedgerOperation]
    defaults: Mapping[str, OperationPolicy]

    @property
    def values(self) -> list[str]:
        return [member.value for member in self.operations]

    @functools.cached_property
    def value_set(self) -> frozenset[str]:
        return frozenset(member.value for member in self.operations)


class OperationRegistry:
    """Which app may post which operations, and with which policy.

    Apps call :meth:`register` from ``AppConfig.ready()``. Policies resolve
    lazily: the app's default, then ``settings.LEDGER_OPERATION_CONFIG``
    (an int is an amount, a dict overrides policy fields).
    """

    def __init__(self) -> None:
        self._apps: dict[str, RegisteredApp] = {}
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str, str], OperationPolicy | None] = {}

    def register(
        self,
        app_label: str,
        operations: type[LedgerOperation],
        policies: Mapping[str, OperationPolicy] | None = None,
    ) -> None:
        """Register ``operations`` as the operation class of ``app_label``."""
        if not (isinstance(operations, type) and issubclass(operations, LedgerOperation)):
            raise OperationClassError(f"{operations!r} is not a LedgerOperation subclass")
        if operations is LedgerOperation:
            raise OperationClassError("register a subclass of LedgerOperation, not the base")
        defaults = {**SHARED_POLICIES, **(policies or {})}
        with self._lock:
            existing = self._apps.get(app_label)
            if existing is not None and existing.operations is not operations:
                raise ImproperlyConfigured(
                    f"ledger app {app_label!r} is already registered with "
                    f"{existing.operations.__qualname__}"
                )
            self._apps[app_label] = RegisteredApp(app_label, operations, defaults)
            self._resolved.clear()

    def unregister(self, app_label: str) -> None:
        """Remove an app (used by tests that register temporary apps)."""
        with self._lock:
            self._apps.pop(app_label, None)
            self._resolved.clear()

    def apps(self) -> list[RegisteredApp]:
        return list(self._apps.values())

    def get_app(self, app_label: str) -> RegisteredApp | None:
        return self._apps.get(app_label)

    def known_labels(self) -> str:
        """The registered apps' labels, sorted and comma-separated (for messages
        that refuse an unknown one)."""
        return ", ".join(sorted(self._apps))

    def label_of(self, operations: type[LedgerOperation]) -> str | None:
        """The label of the app that registered ``operations``, or None."""
        for app in self._apps.values():
            if app.operations is operations:
                return app.label
        return None

    def operations_for(self, app_label: str) -> list[str]:
        app = self._apps.get(app_label)
        return app.values if app else []

    def is_operation_of(self, app_label: str, operation: str) -> bool:
        app = self._apps.get(app_label)
        return app is not None and operation in app.value_set

    def policy(self, app_label: str, operation: str) -> OperationPolicy | None:
        """The effective policy of ``operation`` in ``app_label``, or None if unknown."""
        key = (app_label, operation)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        app = self._apps.get(app_label)
        policy = None
        if app is not None and operation in app.values:
            policy = _apply_override(
                app.defaults.get(operation, OperationPolicy(amount=None)),
                settings_override(operation),
            )
        self._resolved[key] = policy
        return policy

    def postable(self, app_label: str, *, direct: bool = False) -> list[str]:
        """Operations of ``app_label`` that have an amount (and, with ``direct``,
        that the generic ledger endpoints accept)."""
        allowed = []
        for value in self.operations_for(app_label):
            policy = self.policy(app_label, value)
            if policy is not None and policy.amount is not None and (policy.direct or not direct):
                allowed.append(value)
        return allowed

    def clear_cache(self) -> None:
        self._resolved.clear()


def settings_override(operation: str) -> object:
    config = ledger_settings.OPERATION_CONFIG or {}
    return config.get(operation)


def _apply_override(policy: OperationPolicy, override: object) -> OperationPolicy:
    if override is None:
        return policy
    if isinstance(override, int) and not isinstance(override, bool):
        return dataclasses.replace(policy, amount=override)
    if isinstance(override, Mapping):
        fields = {k: v for k, v in override.items() if k in _POLICY_FIELDS}
        if "posters" in fields:
            fields["posters"] = frozenset(fields["posters"])
        if fields.get("expires_after") is not None:
            try:
                fields["expires_after"] = parse_lifetime(fields["expires_after"])
            except ValueError:  # reported by the system checks (ledger_core.E004)
                return dataclasses.replace(policy, amount=None)
        return dataclasses.replace(policy, **fields)
    # Malformed overrides are reported by the system checks (ledger_core.E005);
    # until fixed, the operation has no usable amount.
    return dataclasses.replace(policy, amount=None)


registry = OperationRegistry()


def register(
    app_label: str,
    operations: type[LedgerOperation],
    policies: Mapping[str, OperationPolicy] | None = None,
) -> None:
    """Register an app's operation class; call it from ``AppConfig.ready()``."""
    registry.register(app_label, operations, policies)


def all_operation_values() -> Iterable[str]:
    """Every operation an entry may carry: the apps' and the ledger's own."""
    seen: dict[str, None] = dict.fromkeys(LEDGER_OPERATIONS)
    for app in registry.apps():
        for value in app.values:
            seen.setdefault(value)
    return seen.keys()


def _reset_on_setting_change(*, setting: str, **kwargs: object) -> None:
    if setting in {"LEDGER_OPERATION_CONFIG", "LEDGER_MAX_ENTRY_AMOUNT"}:
        registry.clear_cache()


setting_changed.connect(_reset_on_setting_change)
