"""`make bench --hash-ab`: the site with single posts that skip the hash
chain's work, the "without" side of the same-run A/B of what hashing costs
a post. The head is carried over unchanged, so the variant shares the
benchmark's database with the real server. Never serve this."""

import importlib
import re

from ledger_site.wsgi import application

# Imported once Django is set up (above).
posting = importlib.import_module("ledger_core.services.posting")

_HASH = re.compile(r"encode\(sha256\(decode\((?P<prev>[^,]+), 'hex'\).*?::bytea\), 'hex'\)", re.S)


def _without_hash(sql: str) -> str:
    return _HASH.sub(lambda match: match.group("prev"), sql)


for _name in (
    "_PG_CREDIT_POST", "_PG_DEBIT_POST", "_PG_CREDIT_POST_MOVES", "_PG_DEBIT_POST_MOVES",
):  # fmt: skip
    _sql = getattr(posting, _name)
    _patched = _without_hash(_sql)
    assert _patched != _sql and "sha256" not in _patched, _name
    setattr(posting, _name, _patched)
posting.PreparedEntry.static_part = lambda self: b""

__all__ = ["application"]
