"""The project imports only the public names of third-party packages.

A private name (``_get_ip``, ``module._impl``) can change in any release
without notice; depending on one freezes the library's version.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"ledger_core", "ledger_site", "content_app", "rewards_app", "tests", "bench"}


def _python_files() -> list[Path]:
    files = [ROOT / "manage.py", *ROOT.glob("docker/*.py")]
    for package in sorted(PROJECT):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in PROJECT and top not in sys.stdlib_module_names


def private_imports(source: str) -> list[str]:
    """``module: name`` for every private name imported from a third-party package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not _third_party(node.module):
                continue
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [f"{node.module}: {p}" for p in parts if p.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name):
                    found += [alias.name for p in alias.name.split(".") if p.startswith("_")]
    return found


def test_the_checker_finds_private_imports():
    source = "from django_ratelimit.core import _get_ip, get_usage\nimport redis._parsers\n"
    assert private_imports(source) == ["django_ratelimit.core: _get_ip", "redis._parsers"]
    assert private_imports("from ._local import x\nfrom os import _exit\n") == []


def test_no_private_names_of_third_party_packages():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files()
        for name in private_imports(path.read_text())
    ]
    assert offenders == []
