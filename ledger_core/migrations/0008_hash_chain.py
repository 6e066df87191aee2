"""The per-owner hash chain (ledger_core.chain): columns, the SQL half of the
canonical form, and the chaining of existing entries.

Existing entries are chained owner by owner, in owner order, each owner in
its own transaction: an interrupted run is resumed by running the migration
again (owners whose newest entry has a hash are skipped). The append-only
trigger lets an UPDATE through only when it fills in a missing hash and
changes nothing else.
"""

from django.db import migrations, models, transaction

GENESIS = "0" * 64

FUNCTIONS = """
CREATE OR REPLACE FUNCTION ledger_hash_field(value text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN '\\x00'::bytea
        ELSE '\\x01'::bytea || int4send(octet_length(convert_to(value, 'UTF8')))
            || convert_to(value, 'UTF8') END
$$;

CREATE OR REPLACE FUNCTION ledger_hash_time(value timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION ledger_core_entry_immutable() RETURNS trigger AS $$
BEGIN
    -- Filling in a missing hash (the chaining of entries older than the
    -- chain) is the one change allowed, and only if nothing else changes.
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND NEW.hash IS NOT NULL
        AND (to_jsonb(NEW) - 'hash' - 'prev_hash') = (to_jsonb(OLD) - 'hash' - 'prev_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ledger entries are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""

REVERSE_FUNCTIONS = """
DROP FUNCTION IF EXISTS ledger_hash_field(text);
DROP FUNCTION IF EXISTS ledger_hash_time(timestamptz);
CREATE OR REPLACE FUNCTION ledger_core_entry_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""

CHUNK = 500


def chain_existing(apps, schema_editor):
    from ledger_core.chain import hash_of

    Balance = apps.get_model("ledger_core", "Balance")
    LedgerEntry = apps.get_model("ledger_core", "LedgerEntry")
    after = ""
    while True:
        owners = list(
            Balance.objects.filter(owner_id__gt=after)
            .order_by("owner_id")
            .values_list("owner_id", flat=True)[:CHUNK]
        )
        if not owners:
            return
        for owner_id in owners:
            newest = LedgerEntry.objects.filter(owner_id=owner_id).order_by("-id").first()
            if newest is None or newest.hash is not None:
                continue
            with transaction.atomic():
                head = GENESIS
                for entry in LedgerEntry.objects.filter(owner_id=owner_id).order_by("id"):
                    entry.prev_hash, entry.hash = head, hash_of(entry, head)
                    entry.save(update_fields=["prev_hash", "hash"])
                    head = entry.hash
                prev = (
                    LedgerEntry.objects.filter(owner_id=owner_id)
                    .order_by("-id")
                    .values_list("prev_hash", flat=True)
                    .first()
                )
                Balance.objects.filter(owner_id=owner_id).update(head_hash=head, head_prev=prev)
        after = owners[-1]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("ledger_core", "0007_credit_lots"),
    ]

    operations = [
        migrations.AddField(
            model_name="balance",
            name="head_hash",
            field=models.CharField(db_default=GENESIS, default=GENESIS, max_length=64),
        ),
        migrations.AddField(
            model_name="balance",
            name="head_prev",
            field=models.CharField(db_default=GENESIS, default=GENESIS, max_length=64),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="prev_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.RunSQL(FUNCTIONS, REVERSE_FUNCTIONS),
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
    ]
