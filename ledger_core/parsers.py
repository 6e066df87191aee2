"""DRF's JSON parser with a nesting limit, refusing duplicate keys and lone surrogates.

Python's JSON decoder recurses once per nesting level: a body nested about a
thousand levels deep raises ``RecursionError``, which no handler expects (a
500). No ledger request needs more than a few levels, so anything deeper than
``MAX_JSON_DEPTH`` is a 400 ``invalid``, like any other malformed body.

So is an object that names a key twice (``{"amount": 1, "amount": -500}``):
Python keeps the last value, while a gateway or a signature check in front
of the site may read the first, and the two would act on different requests.
RFC 8259 leaves such an object's meaning open, so the ledger does not guess.
And so is a string with a lone UTF-16 surrogate (``"\\ud800"``): valid JSON,
but no Unicode text, which UTF-8 and PostgreSQL refuse.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

MAX_JSON_DEPTH = 32
#: A ``\u`` escape of a UTF-16 surrogate, the only way a lone one gets into
#: decoded JSON (UTF-8 text cannot carry one).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; a key given twice is a ``ValueError``."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return data


class JSONParser(parsers.JSONParser):
    """``rest_framework.parsers.JSONParser`` (same charset rules, same
    refusal of NaN and Infinity), refusing duplicate keys and bodies nested
    deeper than ``MAX_JSON_DEPTH``."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        too_deep = ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        encoding = parsers.get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = json.loads(
                text,
                object_pairs_hook=unique_keys,
                parse_constant=json.strict_constant if self.strict else None,
            )
            if _SURROGATE_ESCAPE.search(text):  # a pair is fine; a lone one is not
                json.dumps(data, ensure_ascii=False, allow_nan=True).encode()
        except RecursionError:
            raise too_deep from None
        except UnicodeEncodeError:
            raise ParseError("JSON parse error - a string holds a lone surrogate.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise too_deep
        return data
