"""README.md as a new user meets it: after `make run`, its shell blocks, copied
as printed, run in order and answer what the README says they answer.

The site runs as `make run` runs it (the development server on the embedded
PostgreSQL, no Redis); the only change to the commands is the port, since
8000 may be taken on the machine that runs the suite, and webhooks go to a
closed local proxy port, so the example's ping reaches nothing outside.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.livehelpers import ROOT, free_port, running_server, site_env

pytestmark = pytest.mark.slow

# The blocks of these sections are run; the others show `make` targets and the
# Docker deployment, which the suite checks elsewhere.
SECTIONS = ("A tour with curl", "Batch posting", "Dry runs, reversals and past balances",
            "Holds", "Expiring credits", "Events and webhooks", "The content app",
            "The rewards app", "Operating from the command line and the admin")  # fmt: skip


def readme_blocks() -> list[tuple[str, str]]:
    """``(section, block)`` for every sh block of ``SECTIONS``, in order."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        if title in SECTIONS:
            blocks += [(title, block) for block in re.findall(r"```sh\n(.*?)```", part, re.S)]
    return blocks


def documented_pairs(block: str) -> list[tuple[str, object]]:
    """The ``"key": value`` pairs of the answers a block shows in comments right
    after a command (``# {"id": 1, ...}``, ``# 201 {...}`` and their continuation
    lines), with strings, numbers, booleans and null as values. A comment before
    a command describes something else (another request's answer)."""
    pairs = []
    answer = False  # inside the comment lines that follow a command
    for line in block.splitlines():
        text = line.strip()
        if not text:
            answer = False
        elif not text.startswith("#"):
            answer = True
        elif answer:
            for key, raw in re.findall(r'"(\w+)": ("[^"]*"|-?\d+|true|false|null)', text):
                if raw != '"..."':  # a value the README leaves out
                    pairs.append((key, json.loads(raw)))
    return pairs


def json_values(output: str) -> list[tuple[str, object]]:
    """Every ``(key, scalar)`` found in the JSON documents of ``output``."""
    found = []
    decoder = json.JSONDecoder()
    index = 0
    while (start := output.find("{", index)) != -1:
        try:
            document, index = decoder.raw_decode(output, start)
        except ValueError:
            index = start + 1
            continue
        stack = [document]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if isinstance(value, dict | list):
                        stack.append(value)
                    else:
                        found.append((key, value))
            elif isinstance(item, list):
                stack.extend(item)
    return found


def test_documented_pairs_reads_the_readmes_comment_style():
    block = (
        '# 409 {"code": "limit_reached"} (a comment before the command)\n'
        "curl -s localhost:8000/api/x/ \\\n  -d '{}'\n"
        '# 201 {"id": 2, "owner_id": "alice", "amount": -1,\n'
        '#      "nonce": "order-42", ...}\n'
    )
    assert documented_pairs(block) == [
        ("id", 2), ("owner_id", "alice"), ("amount", -1), ("nonce", "order-42"),
    ]  # fmt: skip
    assert ("balance", 3) in json_values('x {"a": {"balance": 3}} y')


def test_readme_commands_run_as_printed(tmp_path):
    blocks = readme_blocks()
    assert len(blocks) >= 5, [title for title, _ in blocks]
    env = site_env(
        DATABASE_URL=None,
        REDIS_URL=None,
        DJANGO_SECRET_KEY=None,
        DJANGO_DEBUG="1",
        DJANGO_SECURE=None,
        LOG_FORMAT="console",
        EMBEDDED_PGDATA=str(tmp_path / "pgdata"),
        # The README pings its example webhook: through a "proxy" on this
        # machine where nothing listens, so no request leaves it.
        LEDGER_WEBHOOK_PROXY=f"http://127.0.0.1:{free_port()}",
    )
    python = str(ROOT / ".venv" / "bin" / "python")
    if not (ROOT / ".venv" / "bin" / "python").exists():  # the suite's own interpreter
        python = sys.executable
    try:
        output = _run_blocks(blocks, env, python, tmp_path)
    finally:
        subprocess.run([python, "-m", "ledger_site.embedded", "stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)  # fmt: skip
    seen = json_values(output)
    missing = [
        (title, key, value)
        for title, block in blocks
        for key, value in documented_pairs(block)
        if (key, value) not in seen
    ]
    assert missing == [], output[-3000:]
    # What the command-line section says its commands print.
    assert "granted 1 entry (+50 credits)" in output
    assert "granted 2 entries (+30 credits) to 2 owner(s)" in output
    assert "ledger consistent" in output
    assert '"code":' not in output  # no command answered with an error body


def _run_blocks(blocks: list[tuple[str, str]], env: dict, python: str, tmp_path) -> str:
    """Run the blocks in order in one shell against a live server; their output."""
    port = free_port()
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    server = [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "manage.py").symlink_to(ROOT / "manage.py")
    with running_server(server, env, f"{base}/healthz"):
        script = "set -euo pipefail\n"
        for title, block in blocks:
            script += f"echo '=== {title}'\n" + block.replace("localhost:8000", f"localhost:{port}")
        result = subprocess.run(
            ["bash", "-c", script], cwd=work, env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout
