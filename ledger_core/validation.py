"""Input rules shared by the services, the API serializers and the commands."""

from __future__ import annotations

import json
import re
from typing import Any

from .exceptions import InvalidEntry
from .models import NONCE_MAX_LENGTH, OWNER_ID_MAX_LENGTH

# Not "." or "..": an owner's URLs (ledger/<owner_id>/) would be dot segments,
# which browsers, curl and most HTTP clients remove before sending (RFC 3986, 5.2.4).
OWNER_ID_RE = re.compile(rf"\A(?!\.\.?\Z)[A-Za-z0-9_.@+:\-]{{1,{OWNER_ID_MAX_LENGTH}}}\Z")
# Printable ASCII without space: 0x21 ('!') .. 0x7e ('~').
NONCE_RE = re.compile(rf"\A[\x21-\x7e]{{1,{NONCE_MAX_LENGTH}}}\Z")
METADATA_MAX_BYTES = 4096

OWNER_ID_RULE = f"1-{OWNER_ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ . @ + : -, not . or .."
NONCE_RULE = f"1-{NONCE_MAX_LENGTH} printable ASCII characters without whitespace"


def is_valid_owner_id(value: object) -> bool:
    return isinstance(value, str) and OWNER_ID_RE.match(value) is not None


def is_valid_nonce(value: object) -> bool:
    return isinstance(value, str) and NONCE_RE.match(value) is not None


def owner_id_validate(value: object) -> str:
    """Return ``value`` if it is a valid owner id, else raise ``InvalidEntry``."""
    if not is_valid_owner_id(value):
        raise InvalidEntry(f"owner_id must be {OWNER_ID_RULE}.", field="owner_id")
    return value  # type: ignore[return-value]


def nonce_validate(value: object) -> str:
    """Return ``value`` if it is a valid nonce, else raise ``InvalidEntry``."""
    if not is_valid_nonce(value):
        raise InvalidEntry(f"nonce must be {NONCE_RULE}.", field="nonce")
    return value  # type: ignore[return-value]


def metadata_problem(value: Any) -> str | None:
    """Why ``value`` is not acceptable entry metadata, or None if it is."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "metadata must be a JSON object."
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return "metadata must be plain JSON (objects, arrays, strings, numbers, booleans, null)."
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"), which no UTF-8 text holds
        return "metadata must be Unicode text (a string holds a lone surrogate)."
    if size > METADATA_MAX_BYTES:
        return f"metadata must be at most {METADATA_MAX_BYTES} bytes as JSON."
    # PostgreSQL's jsonb cannot store NUL characters.
    if "\x00" in text or "\\u0000" in text:
        return "metadata must not contain NUL characters."
    return None


def metadata_validate(value: Any) -> dict | None:
    problem = metadata_problem(value)
    if problem:
        raise InvalidEntry(problem, field="metadata")
    return value
