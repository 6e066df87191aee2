"""The fault suite's own servers and its bank-style workload.

Every fault is real and local: a PostgreSQL cluster of its own
(`pg_createcluster` on a free loopback port, restarted, stopped, frozen with
SIGSTOP, dropped afterwards), a
redis-server of its own (killed, restarted, frozen with SIGSTOP), gunicorn
with the production configuration (workers SIGKILLed, the master reloaded
with SIGHUP). Nothing here touches the machine's shared PostgreSQL or Redis,
and every load loop is bounded in time and count.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.livehelpers import call, free_port

PG_VERSION = "15"


def _run(*args: str, timeout: float = 120) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=timeout)  # noqa: S603


class PostgresCluster:
    """A PostgreSQL cluster of the fault suite's own (Debian's cluster tools)."""

    def __init__(self) -> None:
        self.name = f"faults{os.getpid()}"
        self.port = free_port()
        self.data_directory: Path | None = None
        self.frozen: list[int] = []

    def create(self) -> None:
        _run("pg_createcluster", PG_VERSION, self.name, "-p", str(self.port),
             "--", "--auth=trust")  # fmt: skip
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")
            self.data_directory = Path(conn.execute("SHOW data_directory").fetchone()[0])

    def dsn(self, dbname: str = "ledger") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/ledger"

    def ctl(self, *args: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, self.name, *args)

    def start(self) -> None:
        self.ctl("start")

    def stop(self) -> None:
        self.ctl("stop", "-m", "fast")

    def restart(self, mode: str) -> None:
        self.ctl("restart", "-m", mode)

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then its children (backends and auxiliary
        processes): connections are accepted by the kernel and nothing answers."""
        assert self.data_directory is not None
        postmaster = int((self.data_directory / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # first, so that it forks nothing new
        self.frozen = [postmaster, *worker_pids(postmaster)]
        for pid in self.frozen[1:]:
            with contextlib.suppress(ProcessLookupError):  # a backend that just exited
                os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not all(_stopped(pid) for pid in self.frozen) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not all(_stopped(pid) for pid in self.frozen):
            self.thaw()
            raise AssertionError("PostgreSQL did not stop")

    def thaw(self) -> None:
        for pid in reversed(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def drop(self) -> None:
        self.thaw()  # a frozen cluster must be able to stop
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, self.name],
                       capture_output=True, timeout=120)  # fmt: skip


class RedisServer:
    """A redis-server of the fault suite's own, without persistence (as deployed)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)  # a frozen one must be able to die
        self.process.kill()
        self.process.wait(10)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (state T in /proc/<pid>/stat), or
    has exited (a zombie its stopped parent cannot reap, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "TZ"


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()]


@dataclass
class Ledger:
    """What the clients saw, to be checked against what PostgreSQL stored."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # nonce -> entry id
    acked_amounts: dict[str, int] = field(default_factory=dict)  # nonce -> amount
    # (owner, version read, id of an entry this client had been acknowledged before it)
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    refused: int = 0  # 409 insufficient_balance: nothing stored, a final answer
    unanswered: int = 0  # no final answer before the deadline (must stay 0)
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


RETRYABLE = {409, 429, 500, 502, 503, 504}


def bank_client(
    base: str, token: str, owners: list[str], ledger: Ledger, *, name: str, until: float,
    max_requests: int = 2000,
) -> None:  # fmt: skip
    """Posts credits and debits to random owners, retries every ambiguous answer
    with the same nonce until it gets a final one, and reads the balance after
    each acknowledged post (recording what read-your-writes must hold)."""
    rng = random.Random(name)
    last_acked: dict[str, int] = {}
    for n in range(max_requests):
        if time.monotonic() >= until:
            return
        owner = rng.choice(owners)
        credit = rng.random() < 0.45
        body = {
            "owner_id": owner,
            "operation": "CREDIT_ADD" if credit else "CREDIT_SPEND",
            "nonce": f"{name}-{n}",
        }
        if credit:
            body["amount"] = rng.randint(1, 3)
        status, answer = _post_until_final(base, token, body, ledger, deadline=until + 60)
        if status in (200, 201):
            with ledger.lock:
                ledger.acknowledged[body["nonce"]] = answer["id"]
                ledger.acked_amounts[body["nonce"]] = answer["amount"]
            last_acked[owner] = max(last_acked.get(owner, 0), answer["id"])
            read = _read(base, token, owner)
            if read is not None:
                with ledger.lock:
                    ledger.reads.append((owner, read, last_acked[owner]))
        elif status == 409 and answer.get("code") == "insufficient_balance":
            with ledger.lock:
                ledger.refused += 1
        else:
            with ledger.lock:
                ledger.unanswered += 1


def _post_until_final(
    base: str, token: str, body: dict, ledger: Ledger, deadline: float
) -> tuple[int | None, dict]:
    url = f"{base}/api/content/ledger/"
    delay = 0.05
    while True:
        try:
            status, answer, _ = call("POST", url, body, token)
        except Exception:  # noqa: BLE001 - no answer (reset, truncated, not JSON): retry
            status, answer = None, {}
        final = status is not None and (
            status not in RETRYABLE
            or (status == 409 and answer.get("code") in ("insufficient_balance", "nonce_conflict"))
        )
        if final or time.monotonic() > deadline:
            return status, answer
        with ledger.lock:
            ledger.retries += 1
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _read(base: str, token: str, owner: str) -> int | None:
    try:
        status, answer, _ = call("GET", f"{base}/api/content/ledger/{owner}/", token=token)
    except Exception:  # noqa: BLE001 - no answer: nothing to check
        return None
    return answer["version"] if status == 200 else None


def check(dsn: str, ledger: Ledger, owners: list[str], funded: int) -> dict[str, int]:
    """What PostgreSQL stored against what the clients were told; the counts of
    every kind of violation (all must be 0)."""
    with psycopg.connect(dsn) as conn:
        stored = dict(
            conn.execute(
                "SELECT nonce, id FROM ledger_core_ledgerentry WHERE owner_id = ANY(%s)", [owners]
            ).fetchall()
        )
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT owner_id, nonce FROM ledger_core_ledgerentry "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        negative = conn.execute(
            "SELECT count(*) FROM ledger_core_ledgerentry WHERE balance_after < 0"
        ).fetchone()[0]
        balances = dict(
            conn.execute(
                "SELECT owner_id, balance FROM ledger_core_balance WHERE owner_id = ANY(%s)",
                [owners],
            ).fetchall()
        )
        sums = dict(
            conn.execute(
                "SELECT owner_id, sum(amount) FROM ledger_core_ledgerentry "
                "WHERE owner_id = ANY(%s) GROUP BY 1",
                [owners],
            ).fetchall()
        )
        # The version an entry left its owner at: its rank among the owner's
        # entries (ids follow the balance row's lock order within an owner).
        rank = dict(
            conn.execute(
                "SELECT id, row_number() OVER (PARTITION BY owner_id ORDER BY id) "
                "FROM ledger_core_ledgerentry WHERE owner_id = ANY(%s)",
                [owners],
            ).fetchall()
        )
    lost = [n for n, entry_id in ledger.acknowledged.items() if stored.get(n) != entry_id]
    stale = [(o, v, e) for o, v, e in ledger.reads if v < rank[e]]
    # Every credit stored is the funding or an acknowledged post (retries
    # included): nothing stored that no client was told about, nothing missing.
    unacknowledged = [
        n for n in stored if n not in ledger.acknowledged and not n.startswith("fund-")
    ]
    conservation = sum(balances.values()) - (funded + sum(ledger.acked_amounts.values()))
    return {
        "unanswered": ledger.unanswered,
        "stored_unacknowledged": len(unacknowledged),
        "lost": len(lost),
        "duplicated": duplicates,
        "negative": negative,
        "unbalanced_owners": sum(1 for o in owners if balances.get(o, 0) != sums.get(o, 0)),
        "conservation_error": conservation,
        "stale_reads": len(stale),
    }
