"""Entries are append-only: the database refuses UPDATE and DELETE on them.

PostgreSQL gets a trigger function; SQLite (the embedded default) gets
equivalent triggers. Corrections are new entries, never edits.
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION ledger_core_entry_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_core_entry_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_core_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION ledger_core_entry_immutable();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS ledger_core_entry_no_update_delete ON ledger_core_ledgerentry;
DROP FUNCTION IF EXISTS ledger_core_entry_immutable();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER ledger_core_entry_no_update BEFORE UPDATE ON ledger_core_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER ledger_core_entry_no_delete BEFORE DELETE ON ledger_core_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: DELETE refused'); END""",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS ledger_core_entry_no_update",
    "DROP TRIGGER IF EXISTS ledger_core_entry_no_delete",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("ledger_core", "0001_initial")]

    operations = [migrations.RunPython(forward, reverse)]
