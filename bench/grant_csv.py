"""Benchmark: `manage.py grant_credits --csv` on 100,000 rows against a raw
PostgreSQL COPY of the same rows into the same tables, in one run.

Prints rows/s for both and their ratio, and writes bench/results/grant_csv.json.
Run: `make bench-grant` (or `python -m bench.grant_csv [--rows N]`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import time
from datetime import UTC, datetime

import psycopg

from bench.common import RESULTS, ROOT, manage, site_env, temp_database


def make_rows(count: int, owners: int) -> list[tuple[str, int, str]]:
    return [(f"user{i % owners}", 1 + (i % 97), f"grant-{i}") for i in range(count)]


def write_csv(path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["owner_id", "amount", "nonce"])
        writer.writerows(rows)


def copy_baseline(dsn: str, rows) -> float:
    """COPY the entries the command would write, and the balances, in one transaction."""
    now = datetime.now(UTC)
    balances: dict[str, list[int]] = {}
    entries = io.StringIO()
    for owner, amount, nonce in rows:
        state = balances.setdefault(owner, [0, 0])
        state[0] += amount
        state[1] += 1
        fingerprint = hashlib.sha256(f"content\x1fCREDIT_ADD\x1f{amount}".encode()).hexdigest()
        entries.write(
            f"{owner}\tcontent\tCREDIT_ADD\t{amount}\t{state[0]}\t{nonce}\t{fingerprint}\t\\N\t"
            f'{{"via": "grant_credits"}}\t{now.isoformat()}\tcli:grant_credits:bench\n'
        )
    balance_text = "".join(f"{o}\t{b}\t{v}\t{now.isoformat()}\n" for o, (b, v) in balances.items())
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(
                "COPY ledger_core_ledgerentry (owner_id, app, operation, amount, balance_after, "
                "nonce, fingerprint, limit_key, metadata, created_at, created_by) FROM STDIN"
            ) as copy:
                copy.write(entries.getvalue())
            with cursor.copy(
                "COPY ledger_core_balance (owner_id, balance, version, updated_at) FROM STDIN"
            ) as copy:
                copy.write(balance_text)
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=20_000)
    args = parser.parse_args()
    rows = make_rows(args.rows, args.owners)
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS / "grants.csv"
    write_csv(csv_path, rows)

    with temp_database() as (url, _dsn):
        env = site_env(DATABASE_URL=url, LOG_LEVEL="WARNING")
        manage(env, "migrate", "--noinput")
        started = time.perf_counter()
        result = manage(
            env, "grant_credits", "--csv", str(csv_path), "--no-progress", "--allow-new-owners"
        )
        command_wall = time.perf_counter() - started
        match = re.search(r"in ([0-9.]+)s", result.stdout)
        command_seconds = float(match.group(1)) if match else command_wall
        started = time.perf_counter()
        rerun = manage(
            env, "grant_credits", "--csv", str(csv_path), "--no-progress", "--allow-new-owners"
        )
        rerun_wall = time.perf_counter() - started
        assert f"{args.rows} replay(s)" in rerun.stdout, rerun.stdout

    with temp_database() as (url, dsn):
        manage(site_env(DATABASE_URL=url, LOG_LEVEL="WARNING"), "migrate", "--noinput")
        copy_seconds = copy_baseline(dsn, rows)

    report = {
        "rows": args.rows,
        "owners": args.owners,
        "grant_credits_seconds": round(command_seconds, 3),
        "grant_credits_wall_seconds": round(command_wall, 3),
        "grant_credits_rows_per_s": round(args.rows / command_seconds),
        "rerun_wall_seconds": round(rerun_wall, 3),
        "copy_seconds": round(copy_seconds, 3),
        "copy_rows_per_s": round(args.rows / copy_seconds),
        "ratio_to_copy": round(copy_seconds / command_seconds, 3),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (RESULTS / "grant_csv.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"grant_credits --csv: {args.rows} rows in {command_seconds:.2f}s "
        f"({report['grant_credits_rows_per_s']} rows/s; {command_wall:.2f}s with start-up)"
    )
    print(f"raw COPY of the same rows: {copy_seconds:.2f}s ({report['copy_rows_per_s']} rows/s)")
    print(f"ratio grant_credits / COPY: {report['ratio_to_copy']}")
    print(f"re-run (all replays): {rerun_wall:.2f}s")
    print(f"written to {(RESULTS / 'grant_csv.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
