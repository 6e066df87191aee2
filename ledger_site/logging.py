"""Structured logging (structlog) for the site and for gunicorn.

Every log record, ours or a library's, goes through structlog's
``ProcessorFormatter``: JSON lines in production (``LOG_FORMAT=json``, the
default) and readable console lines for development (``LOG_FORMAT=console``).
The request id bound by ``RequestLogMiddleware`` is merged into every line
logged while that request is handled, and fields passed as ``extra=`` (the
request and ledger decision lines) become top-level keys.
"""

from __future__ import annotations

from typing import Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
]


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer()


def configure_structlog() -> None:
    """Route structlog loggers through the standard library's handlers."""
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter_config(fmt: str) -> dict[str, Any]:
    """A ``logging.config`` formatter entry rendering every record as ``fmt``."""
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(fmt),
        ],
        "foreign_pre_chain": [*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
    }


def logging_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """The site's ``LOGGING`` dict."""
    if fmt not in {"json", "console"}:
        raise ValueError(f"LOG_FORMAT must be 'json' or 'console', not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": formatter_config(fmt)},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # 4xx answers are logged once, by the request line, not again as warnings.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "WARNING"},
            # runserver prints its own "Watching for file changes" line.
            "django.utils.autoreload": {"level": "WARNING"},
            "gunicorn.access": {"level": "WARNING"},
        },
    }
