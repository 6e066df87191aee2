"""JSON log lines: the event, the bound request context and ``extra=`` fields."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
import structlog

from ledger_site.logging import formatter_config

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def _formatter() -> structlog.stdlib.ProcessorFormatter:
    config = formatter_config("json")
    return config.pop("()")(**config)


def _record(msg: str, args: tuple = (), level: int = logging.INFO, **extra) -> logging.LogRecord:
    return logging.getLogger("ledger_core.decisions").makeRecord(
        "ledger_core.decisions", level, __file__, 1, msg, args, None, extra=extra or None
    )


@pytest.fixture
def bound():
    structlog.contextvars.clear_contextvars()
    yield structlog.contextvars.bind_contextvars
    structlog.contextvars.clear_contextvars()


def test_plain_record_is_one_json_line_with_context_and_extra(bound):
    bound(request_id="req-1")
    line = json.loads(_formatter().format(_record("ledger.posted", outcome="posted", amount=-1)))
    assert TIMESTAMP.fullmatch(line.pop("timestamp"))
    assert line == {
        "event": "ledger.posted", "request_id": "req-1", "level": "info",
        "logger": "ledger_core.decisions", "outcome": "posted", "amount": -1,
    }  # fmt: skip


def test_exceptions_and_structlog_records(bound):
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
