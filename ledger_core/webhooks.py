"""Webhooks: the event feed, pushed to subscribers' URLs, signed, at least once.

Design decision: a subscription is a cursor into the feed (``ledger_core.events``).
A worker takes a subscription under a PostgreSQL advisory lock (a session
lock: it writes nothing, so it does not hold the feed's watermark back the
way a row lock in an open transaction would), reads the events after the
cursor, POSTs them as one batch and moves the cursor only on a 2xx (a
redirect is a failure: it is not followed). So two
workers never deliver the same batch at once, a worker killed mid-delivery
leaves the cursor where it was (the batch is sent again: at least once), and
events reach a subscriber in the feed's order. Failures back off
exponentially up to ``LEDGER_WEBHOOK_BACKOFF_MAX``; after failing for
``LEDGER_WEBHOOK_DISABLE_AFTER`` the subscription is disabled, its last error
kept for the admin.

A receiver verifies ``Ledger-Signature: t=<unix>,v1=<hex>``: the hex is
HMAC-SHA256, keyed with the subscription's secret, of ``"<t>.<raw body>"``.
While a rotated secret is kept (``keep_old_seconds``), a second ``v1`` is
the same HMAC keyed with the replaced secret: a receiver accepts a delivery
when any ``v1`` matches its secret.

Destinations are public addresses only (unless ``LEDGER_WEBHOOK_ALLOW_PRIVATE``):
an IP literal or ``localhost`` is checked at subscription, and every delivery
resolves the host, refuses it if any address is not public, and connects to
an address it checked (so a DNS answer that changes in between cannot point
the request elsewhere). Requests go through ``http.client``; the
``HTTP(S)_PROXY`` variables are not used (the proxy would resolve the name
itself). A deployment whose way out is an egress proxy sets
``LEDGER_WEBHOOK_PROXY``: the worker still resolves and checks the host, and
asks the proxy (HTTP ``CONNECT``) for a tunnel to the address it checked; TLS
inside the tunnel is verified against the subscribed host name.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
from datetime import datetime, timedelta
from urllib.parse import SplitResult, unquote, urlsplit

from django.db import connection, transaction
from django.utils import timezone

from .actors import Actor
from .conf import ledger_settings
from .events import EVENT_TYPES, Cursor, Event, event_page
from .exceptions import CursorAhead, Forbidden, InvalidEntry, SubscriptionNotFound
from .models import WebhookSubscription
from .operations import registry

logger = logging.getLogger("ledger_core.webhooks")

#: Events per delivery.
BATCH = 100
#: The longest a replaced secret keeps signing after a rotation: a week.
KEEP_OLD_SECRET_MAX = 7 * 24 * 3600
_LOCK_SPACE = 0x4C45  # advisory lock keys: (this, subscription id)

_NOT_PUBLIC = (
    "is not a public address (webhooks go to public addresses unless "
    "LEDGER_WEBHOOK_ALLOW_PRIVATE is set)"
)


class DestinationRefused(OSError):
    """A webhook's host is, or resolves to, an address that is not public."""


class ProxyRefused(OSError):
    """The egress proxy did not open a tunnel."""


#: The longest answer head (status line and headers) read from a proxy or
#: a receiver, bytes. A receiver's body is never read.
HEAD_MAX = 64 * 1024


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is one webhooks may be sent to."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not an address
    return ip.is_global and not ip.is_multicast


def destination_problem(url: object) -> str | None:
    """Why ``url`` cannot be a webhook's destination, or None. A host name is
    only checked when a delivery resolves it (its addresses may change)."""
    if not isinstance(url, str):
        return "url must be an http(s) URL."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "url must be an http(s) URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url must be an http(s) URL."
    if ledger_settings.WEBHOOK_ALLOW_PRIVATE:
        return None
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return f"url: {host} {_NOT_PUBLIC}."
    try:
        public = is_public(host)
    except ValueError:
        return None  # a name
    return None if public else f"url: {host} {_NOT_PUBLIC}."


def proxy_problem(value: object) -> str | None:
    """Why ``value`` cannot be ``LEDGER_WEBHOOK_PROXY``, or None ("" is no proxy)."""
    if value == "":
        return None
    expected = "must be http://[user:password@]host:port (an HTTP proxy that allows CONNECT)"
    if not isinstance(value, str):
        return expected
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return expected
    if parts.scheme != "http" or not parts.hostname or port is None:
        return expected
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return expected
    return None


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host`` (through the egress proxy, if one is set),
    to an address that was checked."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not ledger_settings.WEBHOOK_ALLOW_PRIVATE:
        for *_, sockaddr in found:
            if not is_public(sockaddr[0]):
                raise DestinationRefused(f"{host} resolves to {sockaddr[0]}, which {_NOT_PUBLIC}")
    proxy = ledger_settings.WEBHOOK_PROXY
    error: OSError = OSError(f"{host}: no address")
    for family, kind, proto, _, sockaddr in found:
        if proxy:
            try:
                return _tunnel(urlsplit(proxy), sockaddr[0], port, timeout)
            except OSError as exc:
                error = exc
                continue
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _tunnel(proxy: SplitResult, address: str, port: int, timeout: float) -> socket.socket:
    """A connection through the HTTP proxy ``proxy`` to ``address`` (an IP
    literal), opened with ``CONNECT``; the proxy's credentials, if its URL
    has them, go as ``Proxy-Authorization: Basic``."""
    name = f"{proxy.hostname}:{proxy.port}"  # errors name the proxy, never its credentials
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        request += f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
    try:
        sock = socket.create_connection((proxy.hostname, proxy.port), timeout=timeout)
    except OSError as exc:
        raise OSError(f"proxy {name}: {exc}") from exc
    try:
        sock.sendall(f"{request}\r\n".encode())
        status, _ = _answer(sock, deadline=time.monotonic() + timeout, to="CONNECT")
        sock.settimeout(timeout)
    except OSError as exc:
        sock.close()
        raise OSError(f"proxy {name}: {exc}") from exc
    if not 200 <= status.code < 300:
        sock.close()
        raise ProxyRefused(f"proxy {name} answered {status.line!r} to CONNECT {target}")
    return sock


@dataclasses.dataclass(frozen=True)
class _Status:
    code: int
    line: str


def _answer(sock: socket.socket, *, deadline: float, to: str) -> tuple[_Status, dict[str, str]]:
    """The status and the header fields (names in lower case) of the HTTP/1
    answer on ``sock``, read a byte at a time so that nothing after its blank
    line is consumed, and all of it by ``deadline`` (``time.monotonic()``): a
    peer that trickles bytes cannot hold the worker for longer."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        if len(head) >= HEAD_MAX:
            raise OSError(f"answer to {to} longer than {HEAD_MAX} bytes")
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            byte = sock.recv(1)
        except TimeoutError:
            raise TimeoutError(f"no complete answer to {to} in time") from None
        if not byte:
            raise ConnectionError(f"closed the connection before answering {to}")
        head += byte
    line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = line.partition(" ")
    if not (version.startswith("HTTP/1.") and rest[:3].isascii() and rest[:3].isdigit()):
        raise OSError(f"not an HTTP answer to {to}: {line[:200]!r}")
    fields = {}
    for field in lines:
        name, colon, value = field.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return _Status(int(rest[:3]), line[:200]), fields


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, self.timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)

    def connect(self) -> None:
        sock = _connect(self.host, self.port, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def app_problem(app: str) -> str | None:
    """Why a subscription cannot be limited to ``app``, or None ("" is every app):
    entries carry the label of a registered app, so any other would never match."""
    if not app or registry.get_app(app) is not None:
        return None
    return (
        f"Unknown app {app!r} (known apps: {registry.known_labels()}; "
        "leave it blank for every app)."
    )


def _check(
    *, actor: Actor, url: str | None, event_types: list[str] | None, app: str | None,
    after: Cursor | None,
) -> None:  # fmt: skip
    """A manager, and the given fields' rules (None: not given)."""
    if not actor.can_post_any:
        raise Forbidden("Only managers may manage webhooks.")
    problem = None if url is None else destination_problem(url)
    if problem is not None:
        raise InvalidEntry(problem, field="url")
    unknown = sorted(set(event_types or ()) - set(EVENT_TYPES))
    if unknown:
        raise InvalidEntry(f"Unknown event types: {', '.join(unknown)}.", field="event_types")
    problem = None if app is None else app_problem(app)
    if problem is not None:
        raise InvalidEntry(problem, field="app")
    if after is not None:
        event_page(after=after, limit=1, types=())  # CursorAhead if it is not the feed's


def subscription_create(
    *,
    url: str,
    actor: Actor,
    event_types: list[str] | None = None,
    app: str = "",
    after: Cursor | None = None,
) -> WebhookSubscription:
    """A new subscription (managers only), delivering what comes after
    ``after`` (a position the feed gave; ``Cursor()`` is its beginning) or,
    without one, after the feed's current end. Its ``secret`` is readable on
    the returned object only."""
    _check(actor=actor, url=url, event_types=event_types, app=app, after=after)
    if after is None:
        _, after = event_page(after=Cursor(), limit=1, types=())
    return WebhookSubscription.objects.create(
        url=url, event_types=list(event_types or ()), app=app or "",
        secret=secrets.token_hex(32), created_by=actor.name, cursor=str(after),
    )  # fmt: skip


def subscription_change(
    subscription_id: int,
    *,
    actor: Actor,
    url: str | None = None,
    event_types: list[str] | None = None,
    app: str | None = None,
    active: bool | None = None,
    after: Cursor | None = None,
    new_secret: bool = False,
    keep_old_seconds: int = 0,
) -> WebhookSubscription:
    """Change the given fields of a subscription (managers only); ``after``
    moves its cursor (to replay, or past a cursor a restore left ahead).

    ``new_secret`` replaces its signing secret (one that leaked, or one
    rotated on a schedule), readable on the returned object only. The
    delivery in flight ends signed with the old secret; every later one is
    signed with the new and, for ``keep_old_seconds`` (at most
    ``KEEP_OLD_SECRET_MAX``), with the one it replaces too, so a receiver can
    switch at its own pace. With 0 (for a secret that leaked) the old one
    signs nothing more, nor does any secret an earlier rotation kept. A
    receiver that checks neither secret refuses the deliveries, and they
    are retried in order, as any refused delivery is: nothing is lost.

    It waits for a delivery in flight and keeps new ones off until it
    commits, and writes only what it changes, so neither overwrites the
    other's cursor or failure state. Re-enabling it, moving its cursor or
    giving it a new URL makes the next delivery try at once (the backoff is
    reset)."""
    _check(actor=actor, url=url, event_types=event_types, app=app, after=after)
    if (keep_old_seconds and not new_secret) or not 0 <= keep_old_seconds <= KEEP_OLD_SECRET_MAX:
        raise InvalidEntry(
            f"keep_old_seconds: 0 to {KEEP_OLD_SECRET_MAX}, with a new secret only.",
            field="keep_old_seconds",
        )
    given = {"url": url, "event_types": event_types, "app": app, "active": active}
    with transaction.atomic():
        _hold_deliveries(subscription_id)
        sub = WebhookSubscription.objects.filter(pk=subscription_id).first()
        if sub is None:
            raise SubscriptionNotFound()
        changed = set()
        for name, value in given.items():
            if value is not None and getattr(sub, name) != value:
                setattr(sub, name, value)
                changed.add(name)
        enabled = "active" in changed and sub.active
        if after is not None:
            sub.cursor = str(after)
            changed.add("cursor")
        if enabled or after is not None or "url" in changed:
            sub.attempts, sub.next_attempt_at, sub.failing_since = 0, None, None
            changed |= {"attempts", "next_attempt_at", "failing_since"}
        if enabled:
            sub.disabled_at = None
            changed.add("disabled_at")
        if new_secret:
            kept = timezone.now() + timedelta(seconds=keep_old_seconds)
            sub.previous_secret, sub.previous_secret_until = (
                (sub.secret, kept) if keep_old_seconds else ("", None)
            )
            sub.secret = secrets.token_hex(32)
            changed |= {"secret", "previous_secret", "previous_secret_until"}
        if changed:
            sub.save(update_fields=changed)
    if new_secret:
        logger.info(
            "webhook secret renewed",
            extra={
                "subscription": sub.pk,
                "actor": actor.name,
                "keep_old_seconds": keep_old_seconds,
            },
        )
    return sub


def subscription_delete(subscription_id: int, *, actor: Actor) -> None:
    """Delete a subscription (managers only), once a delivery in flight has ended."""
    _check(actor=actor, url=None, event_types=None, app=None, after=None)
    with transaction.atomic():
        _hold_deliveries(subscription_id)
        deleted, _ = WebhookSubscription.objects.filter(pk=subscription_id).delete()
    if not deleted:
        raise SubscriptionNotFound()


def cursor_problem(text: str) -> str | None:
    """Why a subscription cannot resume after the position ``text``, or None."""
    cursor = Cursor.parse(text)
    if cursor is None:
        return (
            "Not a position of the event feed: use an event's id or a page's `next` "
            "(0.0.0 is the beginning)."
        )
    try:
        event_page(after=cursor, limit=1, types=())
    except CursorAhead as exc:
        return str(exc.detail)
    return None


def _hold_deliveries(subscription_id: int) -> None:
    """In the caller's transaction: wait for a delivery of the subscription in
    flight to end (it stores its cursor when its POST is answered), and keep
    new ones off until the transaction ends."""
    if not 0 < subscription_id < 2**31:  # the lock's key is a 32-bit integer
        raise SubscriptionNotFound()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, subscription_id])


def signature(secret: str, timestamp: int, body: bytes, *older: str) -> str:
    """The ``Ledger-Signature`` header value for ``body`` sent at ``timestamp``:
    one ``v1`` per secret, ``secret``'s first, then each of ``older``'s."""
    signed = f"{timestamp}.".encode() + body
    macs = (hmac.new(key.encode(), signed, hashlib.sha256).hexdigest() for key in (secret, *older))
    return ",".join([f"t={timestamp}", *(f"v1={mac}" for mac in macs)])


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What one attempt did: ``result`` is delivered, failed, idle, busy,
    waiting or disabled; ``lag`` is the age of the oldest undelivered event."""

    result: str
    events: int = 0
    lag_seconds: float = 0.0


def subscription_ping(subscription_id: int, *, actor: Actor) -> str | None:
    """Send the subscription's URL a delivery with no events, signed as every
    delivery is, now (managers only): None if it answered 2xx, else what went
    wrong. A receiver's set-up (address, TLS, signature check) can so be
    tried before events depend on it. The cursor and failure state stay as
    they are, and an inactive subscription can be tried too."""
    _check(actor=actor, url=None, event_types=None, app=None, after=None)
    sub = WebhookSubscription.objects.filter(pk=subscription_id).first()
    if sub is None:
        raise SubscriptionNotFound()
    body = json.dumps({"events": []}, separators=(",", ":")).encode()
    error = _post(sub, body, [], sub.signing_secrets(timezone.now())).error
    logger.info(
        "webhook pinged", extra={"subscription": sub.pk, "actor": actor.name, "error": error}
    )
    return error


def deliver_once(subscription_id: int, *, now: datetime | None = None) -> Delivery:
    """Deliver the next batch of one subscription, if it is due and free."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_SPACE, subscription_id])
        if not cursor.fetchone()[0]:
            return Delivery("busy")
    try:
        return _deliver(subscription_id, now or timezone.now())
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_SPACE, subscription_id])


def _deliver(subscription_id: int, now: datetime) -> Delivery:
    sub = WebhookSubscription.objects.filter(pk=subscription_id, active=True).first()
    if sub is None:
        return Delivery("disabled")
    if sub.next_attempt_at is not None and sub.next_attempt_at > now:
        return Delivery("waiting")
    if sub.previous_secret_until is not None and sub.previous_secret_until <= now:
        # Its time is up: the replaced secret signs nothing more, and is forgotten.
        WebhookSubscription.objects.filter(pk=sub.pk).update(
            previous_secret="", previous_secret_until=None
        )
        sub.previous_secret, sub.previous_secret_until = "", None
    after = Cursor.parse(sub.cursor) or Cursor()
    try:
        events, next_cursor = event_page(
            after=after, limit=BATCH, app=sub.app or None,
            types=tuple(sub.event_types) or EVENT_TYPES,
        )  # fmt: skip
    except CursorAhead as exc:
        # Delivering on would skip events: the admin decides where to resume.
        return _failed(sub, now, f"cursor {after}: {exc.detail}", Delivery("failed"))
    if not events:
        if next_cursor != after:
            WebhookSubscription.objects.filter(pk=sub.pk).update(cursor=str(next_cursor))
        return Delivery("idle")
    lag = max((now - events[0].created_at).total_seconds(), 0.0)
    body = json.dumps({"events": [event_json(e) for e in events]}, separators=(",", ":"))
    answer = _post(sub, body.encode(), [e.id for e in events], sub.signing_secrets(now))
    if answer.error is None:
        WebhookSubscription.objects.filter(pk=sub.pk).update(
            cursor=str(next_cursor), attempts=0, next_attempt_at=None, failing_since=None,
            last_success_at=now,
        )  # fmt: skip
        return Delivery("delivered", len(events), lag)
    delivery = Delivery("failed", len(events), lag)
    return _failed(sub, now, answer.error, delivery, wait=answer.retry_after)


def _failed(
    sub: WebhookSubscription, now: datetime, error: str, delivery: Delivery,
    wait: float | None = None,
) -> Delivery:  # fmt: skip
    """Record a failed attempt: back off (2^attempts seconds, or longer if
    the receiver asked to ``wait``; at most ``LEDGER_WEBHOOK_BACKOFF_MAX``),
    and disable the subscription once it has failed for
    ``LEDGER_WEBHOOK_DISABLE_AFTER``."""
    attempts = sub.attempts + 1
    failing_since = sub.failing_since or now
    backoff = min(max(2**attempts, wait or 0), int(ledger_settings.WEBHOOK_BACKOFF_MAX))
    changes = {
        "attempts": attempts, "failing_since": failing_since, "last_error": error[:2000],
        "next_attempt_at": now + timedelta(seconds=backoff),
    }  # fmt: skip
    disable = (now - failing_since).total_seconds() >= ledger_settings.WEBHOOK_DISABLE_AFTER
    if disable:
        changes.update(active=False, disabled_at=now)
    WebhookSubscription.objects.filter(pk=sub.pk).update(**changes)
    logger.warning(
        "webhook delivery failed", extra={"subscription": sub.pk, "error": error,
                                          "attempts": attempts, "disabled": disable},
    )  # fmt: skip
    return dataclasses.replace(delivery, result="disabled") if disable else delivery


@dataclasses.dataclass(frozen=True)
class _Answered:
    """How a POST went: ``error`` is None on a 2xx; ``retry_after`` is the
    seconds a 429 or 503 asked to wait (its ``Retry-After``), if it said."""

    error: str | None
    retry_after: float | None = None


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` value (seconds, or an HTTP date) as seconds from
    now (0 for a date past), or None if it is neither."""
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # not an HTTP date (they are in GMT)
        return None
    return max(0.0, when.timestamp() - time.time())


def _post(
    sub: WebhookSubscription, body: bytes, event_ids: list[str], keys: list[str]
) -> _Answered:
    """POST ``body``, signed with each of ``keys``. A redirect is a
    failure and is not followed: its target is not what was subscribed, and
    a client that follows one re-sends the POST as a body-less GET, whose 2xx
    would move the cursor past events nobody received."""
    problem = destination_problem(sub.url)
    if problem is not None:  # e.g. a URL changed in the admin
        return _Answered(f"refused: {problem}")
    parts = urlsplit(sub.url)
    connection_class = _HTTPSConnection if parts.scheme == "https" else _HTTPConnection
    client = connection_class(
        parts.hostname or "", parts.port, float(ledger_settings.WEBHOOK_TIMEOUT)
    )
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Ledger-Event-Ids": ",".join(event_ids),
        "Ledger-Signature": signature(keys[0], timestamp, body, *keys[1:]),
        "User-Agent": "shared-ledger-webhooks",
    }
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        client.request("POST", target, body=body, headers=headers)
        # The answer's head, not its body (never needed: the connection is
        # closed after it), in time; interim 1xx answers come first.
        deadline = time.monotonic() + float(ledger_settings.WEBHOOK_TIMEOUT)
        status, fields = _answer(client.sock, deadline=deadline, to="the POST")
        while 100 <= status.code < 200:
            status, fields = _answer(client.sock, deadline=deadline, to="the POST")
    except DestinationRefused as exc:
        return _Answered(f"refused: {exc}")
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: e.g. TLS name
        return _Answered(f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    if 200 <= status.code < 300:
        return _Answered(None)
    if 300 <= status.code < 400:
        location = fields.get("location", "")[:200]
        return _Answered(f"HTTP {status.code} to {location} (redirects are not followed)")
    if status.code in (429, 503):  # "too many requests", "unavailable": maybe when to come back
        return _Answered(f"HTTP {status.code}", retry_after_seconds(fields.get("retry-after")))
    return _Answered(f"HTTP {status.code}")


def event_json(event: Event) -> dict:
    """An event as the feed's API shows it."""
    from .api.events import EventSerializer

    return dict(EventSerializer(event).data)


def due_subscriptions() -> list[int]:
    """Active subscriptions, oldest first."""
    return list(
        WebhookSubscription.objects.filter(active=True).order_by("id").values_list("id", flat=True)
    )
