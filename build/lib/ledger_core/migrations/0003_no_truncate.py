"""The ledger tables refuse TRUNCATE too.

The row trigger of 0002 refuses UPDATE and DELETE of entries, but TRUNCATE
fires no row triggers: a statement-level trigger refuses it on the entries
and on the balances (which must always equal the sum of the entries).

A throwaway database can be emptied on purpose by a session that says so
first (``SET ledger.allow_truncate = 'on'``): the test suite does, because
Django empties test databases between transactional tests with TRUNCATE.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION ledger_core_no_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('ledger.allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the ledger is append-only: TRUNCATE refused on %', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_core_entry_no_truncate
    BEFORE TRUNCATE ON ledger_core_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_core_no_truncate();

CREATE TRIGGER ledger_core_balance_no_truncate
    BEFORE TRUNCATE ON ledger_core_balance
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_core_no_truncate();
"""

REVERSE = """
DROP TRIGGER IF EXISTS ledger_core_balance_no_truncate ON ledger_core_balance;
DROP TRIGGER IF EXISTS ledger_core_entry_no_truncate ON ledger_core_ledgerentry;
DROP FUNCTION IF EXISTS ledger_core_no_truncate();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger_core", "0002_entry_immutability_trigger")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
