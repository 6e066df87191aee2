"""gunicorn configuration for the Shared Ledger (``gunicorn -c docker/gunicorn.conf.py``).

Every knob comes from the environment with defaults for a small machine.
Prometheus runs in multiprocess mode: each worker writes its samples to
PROMETHEUS_MULTIPROC_DIR, which is emptied when the master starts, and a dead
worker's live gauges are dropped in ``child_exit``, so /metrics reports the
same totals whichever worker answers the scrape.
"""

import multiprocessing
import os
import shutil
from pathlib import Path

from gunicorn.glogging import Logger

# Must be set before prometheus_client is imported, here and in the workers.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/ledger-prometheus")  # noqa: S108

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", str(max(2, multiprocessing.cpu_count() * 2))))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))
wsgi_app = "ledger_site.wsgi:application"

# The site logs one structured line per request (ledger_site.middleware), so
# gunicorn's own access log stays off; its error log uses the same formatter.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


class _Logger(Logger):
    """gunicorn's logger without the access log. With ``logconfig_dict`` set,
    gunicorn would build every request's access-log atoms (~3% of a ledger
    post's CPU) for a logger that writes nothing."""

    def access(self, resp, req, environ, request_time):
        return


logger_class = _Logger


def _logconfig() -> dict:
    from ledger_site.logging import formatter_config

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": formatter_config(os.environ.get("LOG_FORMAT", "json"))},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "loggers": {
            "gunicorn.error": {
                "handlers": ["console"],
                "level": loglevel.upper(),
                "propagate": False,
            },
        },
    }


logconfig_dict = _logconfig()


def on_starting(server):
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
