"""The image's HEALTHCHECK: exit 0 if this container's gunicorn answers
``GET /healthz`` with 200 within two seconds, else 1.

It asks the address gunicorn listens on, ``GUNICORN_BIND`` as
``docker/gunicorn.conf.py`` reads it (default ``0.0.0.0:8000``), so a
deployment that moves the port or binds a Unix socket stays healthy; a
wildcard host (``0.0.0.0``, ``::``) is asked on loopback. The request names
the first host of ``DJANGO_ALLOWED_HOSTS``, so a deployment that allows only
its public name is not answered 400 (Django refuses any other ``Host``).
"""

from __future__ import annotations

import http.client
import os
import socket
import sys

DEFAULT_BIND = "0.0.0.0:8000"
TIMEOUT = 2.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix socket (``GUNICORN_BIND=unix:/path``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connection(bind: str, timeout: float = TIMEOUT) -> http.client.HTTPConnection:
    """A connection to the address gunicorn's ``bind`` setting names."""
    address = bind.strip() or DEFAULT_BIND
    if address.startswith("unix:"):
        return UnixHTTPConnection(address[len("unix:") :], timeout)
    if address.isdigit():  # a bare port
        host, port = "", address
    elif address.endswith("]") or ":" not in address:  # a host alone: gunicorn's port 8000
        host, port = address, "8000"
    else:
        host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is asked on loopback
        host = "::1" if host == "::" else "127.0.0.1"
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def host_header(allowed_hosts: str) -> str:
    """A ``Host`` that Django's ``ALLOWED_HOSTS`` (``DJANGO_ALLOWED_HOSTS``, comma
    separated; the site's default allows ``localhost``) accepts."""
    for entry in (item.strip() for item in allowed_hosts.split(",")):
        if entry and entry != "*":
            return entry.lstrip(".")  # ".example.com" allows example.com itself
    return "localhost"


def healthy(bind: str, allowed_hosts: str = "", timeout: float = TIMEOUT) -> bool:
    conn = connection(bind, timeout)
    try:
        conn.request("GET", "/healthz", headers={"Host": host_header(allowed_hosts)})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


if __name__ == "__main__":
    bind = os.environ.get("GUNICORN_BIND", DEFAULT_BIND)
    sys.exit(0 if healthy(bind, os.environ.get("DJANGO_ALLOWED_HOSTS", "")) else 1)
