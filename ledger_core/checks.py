"""System checks for the operation registry and ledger settings.

``manage.py check`` (and every ``runserver``/``migrate``) reports a
misconfigured ledger at start-up instead of at the first post.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import ledger_settings
from .operations import _POLICY_FIELDS, OPERATION_MAX_LENGTH, parse_lifetime, registry

VALID_ROLES = {"owner", "manager"}
VALID_LIMITS = {None, "daily", "once"}


def _override_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return "an amount must be an integer, not a boolean"
    if isinstance(value, int):
        return None
    if not isinstance(value, Mapping):
        return f"expected an integer amount or a dict of policy fields, got {type(value).__name__}"
    unknown = set(value) - _POLICY_FIELDS
    if unknown:
        return f"unknown policy fields: {', '.join(sorted(unknown))}"
    amount = value.get("amount", 0)
    if "amount" in value and (isinstance(amount, bool) or not isinstance(amount, int)):
        return "amount must be an integer"
    posters = value.get("posters", ())
    if isinstance(posters, str) or not set(posters) <= VALID_ROLES:
        return f"posters must be a list drawn from {sorted(VALID_ROLES)}"
    if value.get("limit") not in VALID_LIMITS:
        return "limit must be null, 'daily' or 'once'"
    if value.get("expires_after") is not None:
        try:
            parse_lifetime(value["expires_after"])
        except ValueError as exc:
            return f"expires_after: {exc}"
    return None


@register(Tags.models)
def check_operations(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    apps = registry.apps()
    if not apps:
        errors.append(
            Warning(
                "No ledger operation class is registered.",
                hint="Call ledger_core.operations.register() from an AppConfig.ready().",
                id="ledger_core.W001",
            )
        )
    config = ledger_settings.OPERATION_CONFIG or {}
    if not isinstance(config, Mapping):
        errors.append(
            Error(
                "LEDGER_OPERATION_CONFIG must be a dict of operation -> amount or policy.",
                hint='e.g. LEDGER_OPERATION_CONFIG = {"DAILY_REWARD": 2}',
                id="ledger_core.E005",
            )
        )
        config = {}

    amounts: dict[str, dict[int | None, list[str]]] = {}
    cap = ledger_settings.MAX_ENTRY_AMOUNT
    for app in apps:
        for value in app.values:
            if len(value) > OPERATION_MAX_LENGTH:
                errors.append(
                    Error(
                        f"Operation {value!r} of {app.operations.__qualname__} is longer than "
                        f"{OPERATION_MAX_LENGTH} characters.",
                        hint="Use a shorter value; LedgerEntry.operation cannot store it.",
                        id="ledger_core.E003",
                    )
                )
            default = app.defaults.get(value)
            if default is None and value not in config:
                errors.append(
                    Error(
                        f"Operation {value!r} of app {app.label!r} has no amount.",
                        hint=f"Pass a policy for it to register() or set "
                        f"LEDGER_OPERATION_CONFIG[{value!r}].",
                        id="ledger_core.E001",
                    )
                )
                continue
            if default is not None:
                amounts.setdefault(value, {}).setdefault(default.amount, []).append(app.label)
            policy = registry.policy(app.label, value)
            if (
                policy is not None
                and policy.amount is not None
                and isinstance(cap, int)
                and abs(policy.amount) > cap
            ):
                errors.append(
                    Error(
                        f"Operation {value!r} amount {policy.amount} exceeds "
                        f"LEDGER_MAX_ENTRY_AMOUNT ({cap}).",
                        hint="Lower the amount or raise LEDGER_MAX_ENTRY_AMOUNT.",
                        id="ledger_core.E006",
                    )
                )
    for value, by_amount in amounts.items():
        if len(by_amount) > 1 and value not in config:
            detail = "; ".join(f"{amt} in {', '.join(labels)}" for amt, labels in by_amount.items())
            errors.append(
                Error(
                    f"Operation {value!r} is declared with different amounts: {detail}.",
                    hint="Declare one amount per operation value, or set it in "
                    "LEDGER_OPERATION_CONFIG.",
                    id="ledger_core.E002",
                )
            )

    known = {value for app in apps for value in app.values}
    for value, override in config.items():
        problem = _override_problem(override)
        if problem:
            errors.append(
                Error(
                    f"LEDGER_OPERATION_CONFIG[{value!r}]: {problem}.",
                    hint='Use an integer amount or a dict such as {"amount": 2, "limit": "daily"}.',
                    id="ledger_core.E004",
                )
            )
        if apps and value not in known:
            errors.append(
                Warning(
                    f"LEDGER_OPERATION_CONFIG names {value!r}, which no app declares.",
                    hint="Remove it or fix the spelling.",
                    id="ledger_core.W002",
                )
            )
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        errors.append(
            Error(
                "LEDGER_MAX_ENTRY_AMOUNT must be a positive integer.",
                hint="e.g. LEDGER_MAX_ENTRY_AMOUNT = 1_000_000",
                id="ledger_core.E007",
            )
        )
    return errors


@register()
def check_database_vendor(app_configs: Any = None, **kwargs: Any) -> list:
    """The ledger's invariants are PostgreSQL SQL; no other database can hold them."""
    from django.db import connections

    errors = []
    for alias in connections:
        vendor = connections[alias].vendor
        if vendor != "postgresql":
            errors.append(
                Error(
                    f"Database {alias!r} is {vendor}; the ledger needs PostgreSQL.",
                    hint="Set DATABASE_URL to a PostgreSQL server (postgres://...), or unset "
                    "it to use the embedded PostgreSQL of `make run`.",
                    id="ledger_core.E008",
                )
            )
    return errors


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


@register()
def check_ledger_viewsets(app_configs: Any = None, **kwargs: Any) -> list:
    """Every consumer app's ledger viewset names a registered operation class."""
    from .api.views import LedgerViewSet

    errors = []
    for viewset in _subclasses(LedgerViewSet):
        operations = viewset.operations
        if operations is None or registry.label_of(operations) is None:
            errors.append(
                Error(
                    f"{viewset.__module__}.{viewset.__qualname__}.operations "
                    f"({getattr(operations, '__qualname__', operations)}) is not a registered "
                    "operation class.",
                    hint="Set operations = <YourApp>Operation and register that class from "
                    "your AppConfig.ready() with ledger_core.operations.register().",
                    obj=viewset,
                    id="ledger_core.E009",
                )
            )
    return errors


@register()
def check_webhook_proxy(app_configs: Any = None, **kwargs: Any) -> list:
    """``LEDGER_WEBHOOK_PROXY`` is empty or an HTTP proxy's URL with a port."""
    from .webhooks import proxy_problem

    problem = proxy_problem(ledger_settings.WEBHOOK_PROXY)
    if problem is None:
        return []
    return [
        Error(
            f"LEDGER_WEBHOOK_PROXY {problem}.",
            hint="Set it to e.g. http://proxy.internal:3128, or unset it to connect directly.",
            id="ledger_core.E010",
        )
    ]


@register()
def check_dry_run_middleware(app_configs: Any = None, **kwargs: Any) -> list:
    """Without ``DryRunMiddleware`` a write that has no dry run, asked as
    one, is stored for real."""
    from django.conf import settings

    if "ledger_core.middleware.DryRunMiddleware" in settings.MIDDLEWARE:
        return []
    return [
        Error(
            "ledger_core.middleware.DryRunMiddleware is not in MIDDLEWARE: a batch, a reversal "
            "or an app's own write asked with ?dry_run=true would be stored for real.",
            hint="Add it to MIDDLEWARE (after the authentication middleware).",
            id="ledger_core.E011",
        )
    ]
