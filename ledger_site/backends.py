"""A user and their permissions, read in one statement.

Design decision: every write asks whether its user is a manager
(``ledger_core.post_any_entry``), so every write pays for loading the user and
their permissions. Django loads the user with one query and the permissions
with two more (the user's own, then their groups'), whose joins cost more to
plan than to run. Here one plain SQL statement returns the user row with every
permission it holds; ``LedgerModelBackend`` (Django's ``ModelBackend``
otherwise) answers ``has_perm`` from it, and reads the permissions with one
statement for a user loaded any other way (sessions, the admin). The same-run
A/B is in docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from .models import RevokedSession

#: The attribute holding a user's permissions ("app_label.codename"), loaded once.
PERMISSIONS_ATTRIBUTE = "ledger_permissions"


@functools.cache
def _permissions_subquery() -> str:
    """The user's permissions as "app_label.codename" rows, for user ``%(user)s``."""
    User = get_user_model()
    user_perms = User.user_permissions.through._meta
    user_groups = User.groups.through._meta
    group_perms = Group.permissions.through._meta
    return f"""
SELECT ct.app_label || '.' || p.codename
FROM {Permission._meta.db_table} p
JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id
WHERE p.id IN (
    SELECT up.permission_id FROM {user_perms.db_table} up
    WHERE up.{user_perms.get_field("user").column} = %(user)s
    UNION
    SELECT gp.permission_id FROM {user_groups.db_table} ug
    JOIN {group_perms.db_table} gp ON gp.group_id = ug.group_id
    WHERE ug.{user_groups.get_field("user").column} = %(user)s
)"""  # noqa: S608 - identifiers come from model metadata, the id is a parameter


@functools.cache
def _user_sql(field: str) -> str:
    User = get_user_model()
    column = User._meta.get_field(field).column
    permissions = _permissions_subquery().replace("%(user)s", f"u.{User._meta.pk.column}")
    revoked = RevokedSession._meta.db_table
    # Columns by name, not ``u.*``: a prepared statement (docs/performance.md)
    # must not change its result's shape when a migration adds a column.
    columns = ", ".join(f"u.{f.column}" for f in User._meta.concrete_fields)
    return (
        f"SELECT {columns}, ARRAY({permissions}) AS {PERMISSIONS_ATTRIBUTE}, "  # noqa: S608
        f"EXISTS (SELECT 1 FROM {revoked} r WHERE r.sid = %(session)s) AS session_revoked "
        f"FROM {User._meta.db_table} u WHERE u.{column} = %(value)s"
    )


def user_with_permissions(field: str, value: Any, *, session: str | None = None) -> Any | None:
    """The user whose ``field`` is ``value``, with their permissions, in one
    statement; None if there is none. ``user.session_revoked`` says whether
    login ``session`` (a token's ``sid``) has logged out."""
    User = get_user_model()
    with connection.cursor() as cursor:
        cursor.execute(_user_sql(field), {"value": value, "session": session})
        row = cursor.fetchone()
        if row is None:
            return None
    *values, permissions, session_revoked = row
    names = [f.attname for f in User._meta.concrete_fields]
    user = User.from_db(connection.alias, names, values)
    setattr(user, PERMISSIONS_ATTRIBUTE, set(permissions))
    user.session_revoked = session_revoked
    return user


def one_statement_users() -> bool:
    """Whether ``LedgerModelBackend`` answers ``has_perm`` (``AUTHENTICATION_BACKENDS``),
    so that users are worth loading with ``user_with_permissions``."""
    path = f"{LedgerModelBackend.__module__}.{LedgerModelBackend.__qualname__}"
    return path in settings.AUTHENTICATION_BACKENDS


class LedgerModelBackend(ModelBackend):
    """``ModelBackend`` whose permission look-up is one statement (or none, for
    a user loaded by ``user_with_permissions``)."""

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if (
            not user_obj.is_active
            or user_obj.is_anonymous
            or obj is not None
            or user_obj.is_superuser
        ):
            return super().get_all_permissions(user_obj, obj)
        loaded = getattr(user_obj, PERMISSIONS_ATTRIBUTE, None)
        if loaded is None:
            with connection.cursor() as cursor:
                cursor.execute(_permissions_subquery(), {"user": user_obj.pk})
                loaded = {row[0] for row in cursor.fetchall()}
            setattr(user_obj, PERMISSIONS_ATTRIBUTE, loaded)
        return loaded
