"""Every entry records the owner's balance version it made (``seq``).

Existing entries are numbered in id order per owner, which is the order they
were applied in (a post inserts its entry while holding the owner's balance
row). The append-only trigger is lifted for this one statement only.
"""

from django.db import migrations, models

NUMBER_EXISTING = """
ALTER TABLE ledger_core_ledgerentry DISABLE TRIGGER ledger_core_entry_no_update_delete;
UPDATE ledger_core_ledgerentry e SET seq = n.seq
FROM (SELECT id, row_number() OVER (PARTITION BY owner_id ORDER BY id) AS seq
      FROM ledger_core_ledgerentry) n
WHERE e.id = n.id;
ALTER TABLE ledger_core_ledgerentry ENABLE TRIGGER ledger_core_entry_no_update_delete;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger_core", "0003_no_truncate")]

    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="seq",
            field=models.BigIntegerField(
                help_text="the owner's version after this entry", null=True
            ),
        ),
        migrations.RunSQL(NUMBER_EXISTING, migrations.RunSQL.noop),
    ]
