"""Django's ``ModelBackend``, with a user's permissions read in one statement.

Design decision: every write asks whether its user is a manager
(``ledger_core.post_any_entry``), so every write pays for the user's
permissions. ``ModelBackend`` reads them with two ORM queries (the user's own,
then their groups'), whose joins cost more to plan than to run; this backend
reads both with one plain SQL statement and otherwise behaves as
``ModelBackend`` does (superusers have every permission, inactive users none).
The figures are in docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

CACHE_ATTRIBUTE = "ledger_all_permissions"


@functools.cache
def _permissions_sql() -> str:
    User = get_user_model()
    user_perms = User.user_permissions.through._meta
    user_groups = User.groups.through._meta
    group_perms = Group.permissions.through._meta
    user_column = user_perms.get_field("user").column
    group_user_column = user_groups.get_field("user").column
    return f"""
SELECT ct.app_label, p.codename
FROM {Permission._meta.db_table} p
JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id
WHERE p.id IN (
    SELECT up.permission_id FROM {user_perms.db_table} up WHERE up.{user_column} = %(user)s
    UNION
    SELECT gp.permission_id FROM {user_groups.db_table} ug
    JOIN {group_perms.db_table} gp ON gp.group_id = ug.group_id
    WHERE ug.{group_user_column} = %(user)s
)
"""  # noqa: S608 - identifiers come from model metadata, the id is a parameter


class LedgerModelBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if (
            not user_obj.is_active
            or user_obj.is_anonymous
            or obj is not None
            or user_obj.is_superuser
        ):
            return super().get_all_permissions(user_obj, obj)
        cached = getattr(user_obj, CACHE_ATTRIBUTE, None)
        if cached is None:
            with connection.cursor() as cursor:
                cursor.execute(_permissions_sql(), {"user": user_obj.pk})
                cached = {f"{app_label}.{codename}" for app_label, codename in cursor.fetchall()}
            setattr(user_obj, CACHE_ATTRIBUTE, cached)
        return cached
