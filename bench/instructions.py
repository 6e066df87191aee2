"""`make bench-instructions`: CPU instructions per request, counted by valgrind.

Throughput on a shared 2-core machine drifts by tens of percent between
minutes and days, and so do ratios of two servers measured in turn (a same-run
A/B of two identical servers spreads by about 10% here). The number of
instructions a request executes does not: valgrind's callgrind counts them,
and two runs of the same code agree to about 0.1%. So this is the sharp
measure of what a change costs or saves in the web worker's own work.

One process (valgrind, callgrind) serves requests through the site's WSGI
handler (``django.core.handlers.wsgi.WSGIHandler``, the middleware and DRF
as deployed, the standard stack's settings: JWT, rate limits on Redis,
metrics, JSON logs) against real PostgreSQL and Redis, after a warm-up of
each scenario: ``GET /healthz``, balance reads, single posts, and batch posts
of 100 entries. gunicorn's own HTTP handling, PostgreSQL and Redis are not
counted (the client libraries' side is). Counters are dumped at every
``os.getppid()`` call, which the child makes between scenarios and nothing
else on these paths makes.

``--variant NAME=VALUE`` counts a second process whose environment adds that
setting and prints B / A per scenario. Writes bench/results/instructions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    OWNERS,
    RESULTS,
    ROOT,
    manage,
    seed_owners,
    service_account_password,
    stack_env,
    temp_database,
    with_variant,
)

BATCH = 100
WARM_UP = 20
#: Scenario -> requests counted per ``--requests`` 100 (a batch is 100 entries).
SCENARIOS = {"floor": 1.0, "read": 1.0, "post": 1.0, "batch": 0.1}


def child(requests: int) -> None:
    """Serve the scenarios in this process (run under valgrind by ``main``)."""
    import io

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_site.settings")
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    run = os.environ["BENCH_RUN"]
    counter = {"n": 0}

    def call(method: str, path: str, body: dict | None = None, token: str = "") -> tuple:
        data = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": "application/json",
        }  # fmt: skip
        if token:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        started: list = []
        response = handler(environ, lambda status, headers, exc_info=None: started.append(status))
        content = b"".join(response)
        response.close()
        status = int(started[0].split()[0])
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {started[0]} {content[:500]!r}")
        return status, content

    token = json.loads(
        call(
            "POST",
            "/api/auth/token/",
            {"username": os.environ["BENCH_USER"], "password": os.environ["BENCH_PASSWORD"]},
        )[1]  # fmt: skip
    )["access"]

    def owner() -> str:
        counter["n"] += 1
        return f"owner{counter['n'] % OWNERS + 1}"

    def entry() -> dict:
        counter["n"] += 1
        return {"owner_id": f"owner{counter['n'] % OWNERS + 1}", "operation": "CREDIT_ADD",
                "nonce": f"{run}-{counter['n']}", "amount": 1}  # fmt: skip

    scenarios = {
        "floor": lambda: call("GET", "/healthz"),
        "read": lambda: call("GET", f"/api/content/ledger/{owner()}/", token=token),
        "post": lambda: call("POST", "/api/content/ledger/", entry(), token=token),
        "batch": lambda: call(
            "POST",
            "/api/content/ledger/batch/",
            {"entries": [entry() for _ in range(BATCH)]},
            token=token,
        ),  # fmt: skip
    }
    for name, request in scenarios.items():
        for _ in range(max(1, int(WARM_UP * SCENARIOS[name]))):
            request()
    os.getppid()  # dump: start-up and warm-up
    counted = {}
    for name, request in scenarios.items():
        counted[name] = max(1, int(requests * SCENARIOS[name]))
        for _ in range(counted[name]):
            request()
        os.getppid()  # dump: this scenario
    print("BENCH_COUNTED " + json.dumps(counted), flush=True)


def dump_total(path: Path) -> int:
    """The instructions a callgrind dump counted."""
    found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
    if found is None:
        raise RuntimeError(f"no totals in {path}")
    return int(found.group(1))


def sections(command: list[str], workdir: Path, env: dict[str, str]) -> tuple[list[int], str]:
    """Run the Python program ``command`` under callgrind: the instructions of
    each of its sections (one ends at each ``os.getppid()`` call; what runs
    after the last one is left out) and its standard output."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "callgrind.out"
    valgrind = [
        "valgrind", "--tool=callgrind", "--dump-before=getppid",
        f"--callgrind-out-file={out}", f"--log-file={workdir / 'valgrind.log'}",
    ]  # fmt: skip
    with (workdir / "program.log").open("w") as log:
        result = subprocess.run(  # noqa: S603 - fixed arguments
            [*valgrind, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
            text=True, timeout=3600,
        )  # fmt: skip
    if result.returncode != 0:
        tail = (workdir / "program.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command} failed under valgrind ({result.returncode}):\n{tail}")
    dumps = sorted(workdir.glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
    return [dump_total(path) for path in dumps], result.stdout


def count(env: dict[str, str], requests: int, workdir: Path) -> dict[str, float]:
    """Instructions per request of each scenario, in one valgrind run."""
    command = [sys.executable, "-m", "bench.instructions", "--child", "--requests", str(requests)]
    totals, stdout = sections(command, workdir, env)
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_COUNTED ")), None)
    if line is None:
        raise RuntimeError(f"the counted run printed no counts:\n{stdout[-2000:]}")
    counted = json.loads(line.split(" ", 1)[1])
    # The first section is start-up and warm-up; then one per scenario, in order.
    if len(totals) != len(counted) + 1:
        raise RuntimeError(f"{len(totals)} sections for {len(counted)} scenarios in {workdir}")
    return {name: total / counted[name] for name, total in zip(counted, totals[1:], strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--requests", type=int, default=100, help="counted per scenario (batches: a tenth)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A/B: also count a process whose environment adds NAME=VALUE (repeatable)",
    )
    args = parser.parse_args()
    if args.child:
        child(args.requests)
        return
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: run scripts/ensure-tools.sh bench")
    variant = dict(item.split("=", 1) for item in args.variant)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="ledger-instructions-"))
    report: dict = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with temp_database("ledger_instructions") as (url, dsn):
        env = stack_env(url, f"instr-{run_id}", tmp / "prometheus-a")
        manage(env, "migrate", "--noinput")
        seed_owners(dsn)
        account = manage(env, "create_service_account", "bench-manager").stdout
        env.update(BENCH_USER="bench-manager", BENCH_PASSWORD=service_account_password(account))
        sides = {"a": env}
        if variant:
            sides["b"] = with_variant(env, variant, tmp / "prometheus-b")
        for side, side_env in sides.items():
            Path(side_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            print(f"counting {'with ' + ' '.join(args.variant) if side == 'b' else 'as is'} "
                  f"under valgrind ...", flush=True)  # fmt: skip
            side_env = {**side_env, "BENCH_RUN": f"{run_id}-{side}"}
            report[side] = count(side_env, args.requests, tmp / side)
            print(f"  {time.monotonic() - started:.0f} s", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if variant:
        report["variant"] = variant

    print()
    header = f"{'scenario':<10}{'instructions/request':>22}"
    if variant:
        header += f"{'with ' + ' '.join(args.variant):>40}{'B / A':>8}"
    print(header)
    for name, value in report["a"].items():
        row = f"{name:<10}{value / 1e6:>20.3f} M"
        if variant:
            other = report["b"][name]
            row += f"{other / 1e6:>38.3f} M{other / value:>8.3f}"
        print(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "instructions.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {(RESULTS / 'instructions.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
