"""PostgreSQL engine: django-prometheus's query metrics, and a health check with no round trip.

Django's ``CONN_HEALTH_CHECKS`` runs ``SELECT 1`` before the first query of
every request that reuses a persistent connection: one extra round trip and
one extra statement for the server per request, the cost of a third of a
ledger post. This engine keeps the guarantee (a connection the server closed
is replaced before the request uses it, and the request does not fail) and
drops the round trip when it is provably unnecessary:

An idle connection whose socket has nothing to read has received nothing from
the server since its last answer, so the server has neither closed it nor
terminated its backend (``pg_terminate_backend``, a shutdown or a restart all
send a FATAL message and close the socket, which makes it readable; a crash
of the server closes the socket). Such a connection is used as is. Anything
else (unread bytes, an unknown or failed transaction state) gets Django's own
``SELECT 1``. What neither check can see is a network path that dropped
silently; that fails the query as it would have failed the ``SELECT 1``.
"""

from __future__ import annotations

import select

from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as _PrometheusWrapper
from psycopg.pq import TransactionStatus


def socket_is_quiet(fileno: int) -> bool:
    """True if nothing (data, error or EOF) is waiting to be read on ``fileno``."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class DatabaseWrapper(_PrometheusWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        try:
            quiet = conn.info.transaction_status == TransactionStatus.IDLE and socket_is_quiet(
                conn.fileno()
            )
        except Exception:  # noqa: BLE001 - any doubt: ask the server
            quiet = False
        return quiet or super().is_usable()
