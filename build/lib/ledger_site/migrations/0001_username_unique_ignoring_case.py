"""Usernames are unique ignoring case, in the database itself.

A username is its owner's ledger id, so "Alice" and "alice" must not both
exist. Registration checks that before inserting, but two concurrent
registrations could both pass the check; this unique index on
``lower(username)`` makes the second insert fail (answered as "taken").
A database that already holds two usernames differing only in case must be
cleaned up before this migration can run.
"""

from django.conf import settings
from django.db import migrations

INDEX = "site_user_username_lower_uniq"


def _table(apps):
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    return apps.get_model(app_label, model_name)


def create_index(apps, schema_editor):
    model = _table(apps)
    qn = schema_editor.quote_name
    column = model._meta.get_field("username").column
    schema_editor.execute(
        f"CREATE UNIQUE INDEX {qn(INDEX)} ON {qn(model._meta.db_table)} (lower({qn(column)}))"
    )


def drop_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(INDEX)}")


class Migration(migrations.Migration):
    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [migrations.RunPython(create_index, drop_index)]
