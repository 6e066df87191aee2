"""The JSON log formatter's direct path gives what structlog's chain gives."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

import pytest
import structlog

from ledger_site.logging import JsonLineFormatter, formatter_config

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


class _Custom:
    def __repr__(self) -> str:
        return "<custom>"


class _StructlogAware:
    def __structlog__(self) -> str:
        return "structlog-form"


def _formatter() -> JsonLineFormatter:
    config = formatter_config("json")
    factory = config.pop("()")
    assert factory is JsonLineFormatter
    return factory(**config)


def _record(msg: str, args: tuple = (), level: int = logging.INFO, **extra) -> logging.LogRecord:
    record = logging.getLogger("ledger_core.decisions").makeRecord(
        "ledger_core.decisions", level, __file__, 1, msg, args, None, extra=extra or None
    )
    return record


def _both(formatter: JsonLineFormatter, record: logging.LogRecord) -> tuple[dict, dict]:
    direct = json.loads(formatter.format(record))
    chain = json.loads(structlog.stdlib.ProcessorFormatter.format(formatter, record))
    for line in (direct, chain):
        assert TIMESTAMP.fullmatch(line.pop("timestamp"))
    return direct, chain


@pytest.fixture
def bound():
    structlog.contextvars.clear_contextvars()
    yield structlog.contextvars.bind_contextvars
    structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize(
    ("msg", "args", "level", "extra"),
    [
        ("ledger.posted", (), logging.INFO, {"outcome": "posted", "amount": -1, "nonce": "n-1"}),
        ("entry %s of %d", ("x", 3), logging.WARNING, {}),
        ("request", (), logging.INFO, {"user": None, "status": 201, "duration_ms": 1.25}),
        ("odd values", (), logging.ERROR, {"when": datetime(2026, 1, 2, tzinfo=UTC)}),
        ("objects", (), logging.INFO, {"custom": _Custom(), "aware": _StructlogAware()}),
        ("nested", (), logging.CRITICAL, {"ratelimit": {"group": "auth", "key": "ip"}}),
        ("extra wins", (), logging.INFO, {"level_hint": 1, "event_id": 7}),
    ],
)
def test_direct_path_equals_structlog_chain(bound, msg, args, level, extra):
    bound(request_id="req-1", peer="10.0.0.1")
    direct, chain = _both(_formatter(), _record(msg, args, level, **extra))
    assert direct == chain
    assert direct["request_id"] == "req-1" and direct["logger"] == "ledger_core.decisions"
    assert direct["level"] == logging.getLevelName(level).lower()


def test_direct_path_without_bound_context(bound):
    direct, chain = _both(_formatter(), _record("plain"))
    assert direct == chain == {"event": "plain", "level": "info", "logger": "ledger_core.decisions"}


def test_exceptions_and_structlog_records_use_the_chain(bound):
    formatter = _formatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = json.loads(formatter.format(record))
    assert line["event"] == "failed" and "ValueError: boom" in line["exception"]

    captured: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(formatter)
    handler.emit = lambda record: captured.append(handler.format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("ledger_test.structlog")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        bound(request_id="req-2")
        structlog.get_logger("ledger_test.structlog").info("bound event", field=1)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = json.loads(captured[0])
    assert (line["event"], line["field"], line["request_id"]) == ("bound event", 1, "req-2")
    assert line["logger"] == "ledger_test.structlog" and TIMESTAMP.fullmatch(line["timestamp"])
