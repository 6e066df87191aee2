"""Webhooks against a real receiver on 127.0.0.1 that fails 30% of requests
and is down for a while: every event arrives, signed, in order, acknowledged
once, with two workers delivering at the same time."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import io
import json
import re
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from ledger_core.actors import Actor
from ledger_core.events import Cursor, event_page
from ledger_core.exceptions import InvalidEntry
from ledger_core.models import WebhookSubscription
from ledger_core.services import EntryRequest, entry_post_batch, hold_capture, hold_place
from ledger_core.webhooks import deliver_once, signature, subscription_change, subscription_create
from tests.conftest import SYSTEM, fund
from tests.ledger_core.test_events import ahead_of_the_feed
from tests.livehelpers import free_port

MANAGER = Actor(name="manager", can_post_any=True, can_view_any=True)


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], tls: Any = None) -> Iterator[int]:
    """``handler`` served on a free loopback port (over TLS with the ``tls``
    server context); yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _receivers_on_loopback(settings):
    # The receivers here listen on 127.0.0.1; the policy tests below turn
    # the allowance off again.
    settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = True


@functools.cache
def readme_verifier() -> Callable[..., bool]:
    """The receiver's check that README.md prints, ``verified(secret, header, body)``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Events and webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    return namespace["verified"]


class Receiver:
    """An HTTP receiver that verifies signatures as the README does and, if
    ``flaky``, fails 3 requests in 10."""

    def __init__(self, port: int, secret: str, *, flaky: bool = True) -> None:
        self.port, self.secret, self.flaky = port, secret, flaky
        self.requests = 0
        self.acknowledged: list[dict] = []
        self.bad_signatures = 0
        self.signatures: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers["Ledger-Signature"]
                with receiver.lock:
                    receiver.requests += 1
                    receiver.signatures.append(header)
                    fail = receiver.flaky and receiver.requests % 10 in (1, 4, 7)  # 30%
                    if not readme_verifier()(receiver.secret, header, body):
                        receiver.bad_signatures += 1
                        fail = True
                    events = json.loads(body)["events"]
                    ids = [i for i in self.headers["Ledger-Event-Ids"].split(",") if i]
                    assert ids == [e["id"] for e in events]
                    if not fail:
                        receiver.acknowledged.extend(events)
                self.send_response(500 if fail else 204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_every_event_arrives_signed_in_order_once_despite_failures_and_two_workers(settings):
    settings.LEDGER_WEBHOOK_BACKOFF_MAX = 1
    port = free_port()
    sub = subscription_create(url=f"http://127.0.0.1:{port}/hook", actor=MANAGER)
    receiver = Receiver(port, sub.secret)
    for owner in ("a", "b", "c"):
        fund(owner, 1000)
    for n in range(4):
        entry_post_batch(app="content", actor=SYSTEM, entries=[
            EntryRequest(owner_id=owner, operation="CREDIT_ADD", nonce=f"b{n}-{k}", amount=1)
            for owner in ("a", "b", "c") for k in range(30)
        ])  # fmt: skip
    for n in range(20):
        hold = hold_place(owner_id="a", operation="CREDIT_SPEND", nonce=f"h{n}", app="content",
                          actor=MANAGER).hold  # fmt: skip
        hold_capture(hold_id=hold.pk, app="content", actor=MANAGER)
    expected, after = [], Cursor.parse(sub.cursor)
    while page := event_page(after=after, limit=500)[0]:
        expected += [e.id for e in page]
        after = page[-1].position
    assert len(expected) >= 400

    # The receiver is down at first: deliveries fail and back off.
    assert deliver_once(sub.pk).result == "failed"
    assert WebhookSubscription.objects.get(pk=sub.pk).failing_since is not None
    receiver.start()
    try:
        deadline = time.monotonic() + 90
        results = Counter()

        def worker():
            try:
                while time.monotonic() < deadline:
                    state = WebhookSubscription.objects.get(pk=sub.pk)
                    if state.cursor == str(after) or Cursor.parse(state.cursor) >= after:
                        return
                    results[deliver_once(sub.pk).result] += 1
                    time.sleep(0.05)
            finally:
                connections.close_all()

        workers = [threading.Thread(target=worker) for _ in range(2)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(120)
    finally:
        receiver.stop()
    acknowledged = [e["id"] for e in receiver.acknowledged]
    assert receiver.bad_signatures == 0
    assert Counter(acknowledged).most_common(1)[0][1] == 1, "a batch was acknowledged twice"
    assert acknowledged == expected  # all of them, in the feed's order
    assert results["failed"] > 0 and receiver.requests > len(expected) // 100
    # Per owner, entries arrive in their chain's order.
    for owner in ("a", "b", "c"):
        seqs = [e["data"]["seq"] for e in receiver.acknowledged
                if e["type"] == "entry.posted" and e["owner_id"] == owner]  # fmt: skip
        assert seqs == sorted(seqs)
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert state.failing_since is None and state.attempts == 0 and state.last_success_at


@pytest.mark.django_db(transaction=True)
def test_a_subscription_failing_too_long_is_disabled(settings):
    settings.LEDGER_WEBHOOK_DISABLE_AFTER = 0
    sub = subscription_create(url=f"http://127.0.0.1:{free_port()}/", actor=MANAGER)
    fund("a", 1)
    assert deliver_once(sub.pk).result == "disabled"
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert not state.active and state.disabled_at and "Connection refused" in state.last_error


@pytest.mark.django_db(transaction=True)
def test_a_cursor_ahead_of_the_feed_fails_the_delivery_and_stays():
    """Left by a restore of the database to an earlier state, say: delivering
    on from it would skip events, so the subscription fails (and is disabled
    in time) with the reason for the admin, and its cursor is kept."""
    sub = subscription_create(url="http://127.0.0.1:9/h", actor=MANAGER)
    ahead = str(ahead_of_the_feed())
    WebhookSubscription.objects.filter(pk=sub.pk).update(cursor=ahead)
    fund("a", 1)
    assert deliver_once(sub.pk).result == "failed"
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert state.cursor == ahead and state.attempts == 1
    assert "ahead of the event feed" in state.last_error


ADMIN_WEBHOOKS = "/admin/ledger_core/webhooksubscription/"


@pytest.mark.django_db(transaction=True)
def test_the_admin_moves_a_cursor_and_deliveries_resume_there_at_once(admin_client):
    """After a restore left a subscription's cursor ahead, say: the admin sets
    a position the feed gave, and the next delivery starts after it."""

    receiver = recording()
    with serving(receiver) as port:
        sub = subscription_create(url=f"http://127.0.0.1:{port}/h", actor=MANAGER)
        start = sub.cursor
        fund("a", 1)
        fund("b", 2)
        WebhookSubscription.objects.filter(pk=sub.pk).update(cursor=str(ahead_of_the_feed()))
        assert deliver_once(sub.pk).result == "failed"  # and backs off
        change = f"{ADMIN_WEBHOOKS}{sub.pk}/change/"
        assert admin_client.get(change).status_code == 200
        form = {"url": sub.url, "event_types": "[]", "app": "", "active": "on"}
        for bad, error in [("yesterday", "Not a position"),
                           ("\u0663.0.1", "Not a position"),
                           (str(ahead_of_the_feed()), "ahead of the event feed")]:  # fmt: skip
            response = admin_client.post(change, {**form, "resume_after": bad})
            assert response.status_code == 200 and error in response.content.decode(), bad
        assert WebhookSubscription.objects.get(pk=sub.pk).attempts == 1
        response = admin_client.post(change, {**form, "resume_after": start})
        assert response.status_code == 302, response.content.decode()[:2000]
        state = WebhookSubscription.objects.get(pk=sub.pk)
        assert state.cursor == start and state.attempts == 0
        assert state.next_attempt_at is None and state.failing_since is None
        assert deliver_once(sub.pk).result == "delivered"
        moved = WebhookSubscription.objects.get(pk=sub.pk).cursor
        assert admin_client.post(change, {**form, "active": ""}).status_code == 302
        assert WebhookSubscription.objects.get(pk=sub.pk).cursor == moved  # kept: no resume_after
    expected = [e.id for e in event_page(after=Cursor.parse(start), limit=100)[0]]
    delivered = [e["id"] for _, _, body in receiver.seen for e in json.loads(body)["events"]]
    assert delivered == expected and len(expected) == 2


@pytest.mark.django_db(transaction=True)
def test_a_subscription_may_start_at_a_position_the_feed_gave(admin_client, manager_client):
    before = subscription_create(url="https://example.test/a", actor=MANAGER).cursor
    fund("a", 1)
    response = manager_client.post("/api/webhooks/", {"url": "https://example.test/b",
                                                      "after": before}, format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    assert "after" not in response.json() and response.json()["cursor"] == before
    response = manager_client.post("/api/webhooks/", {"url": "https://example.test/c"},
                                   format="json")  # fmt: skip
    assert Cursor.parse(response.json()["cursor"]) > Cursor.parse(before)  # the feed's end
    for bad in ("yesterday", "\u0663.0.1", str(ahead_of_the_feed())):
        response = manager_client.post("/api/webhooks/", {"url": "https://example.test/d",
                                                          "after": bad}, format="json")  # fmt: skip
        body = response.json()
        assert response.status_code == 400 and body["code"] == "invalid", bad
        assert list(body["errors"]) == ["after"], bad
    assert WebhookSubscription.objects.count() == 3
    # In the admin: empty is from now, as in the API; a position is kept.
    form = {"url": "https://example.test/e", "event_types": "[]", "app": "", "active": "on"}
    for resume_after in ("", "0.0.0"):
        response = admin_client.post(
            ADMIN_WEBHOOKS + "add/", {**form, "resume_after": resume_after}
        )
        assert response.status_code == 302, response.content.decode()[:2000]
    cursors = list(WebhookSubscription.objects.order_by("pk").values_list("cursor", flat=True))
    assert Cursor.parse(cursors[-2]) > Cursor.parse(before) and cursors[-1] == "0.0.0"


@pytest.mark.django_db(transaction=True)
def test_an_admin_change_waits_for_a_delivery_in_flight_and_is_kept(admin_client):
    """The delivery stores its cursor when its POST is answered; the admin's
    change, made meanwhile, must not be overwritten by it."""
    from django.db import connection

    arrived, release = threading.Event(), threading.Event()

    class Slow(QuietHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.set()
            release.wait(10)
            self.send_response(204)
            self.end_headers()

    results: list[Any] = []

    def in_thread(work):
        try:
            results.append(work())
        finally:
            connections.close_all()

    with serving(Slow) as port:
        sub = subscription_create(url=f"http://127.0.0.1:{port}/h", actor=MANAGER)
        fund("a", 1)
        delivery = threading.Thread(target=in_thread, args=(lambda: deliver_once(sub.pk).result,))
        delivery.start()
        assert arrived.wait(10)
        form = {"url": sub.url, "event_types": "[]", "app": "", "active": "on",
                "resume_after": "0.0.0"}  # fmt: skip
        change = threading.Thread(target=in_thread, args=(lambda: admin_client.post(
            f"{ADMIN_WEBHOOKS}{sub.pk}/change/", form).status_code,))  # fmt: skip
        change.start()
        deadline = time.monotonic() + 10
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks "
                               "WHERE locktype = 'advisory' AND NOT granted")  # fmt: skip
                waiting = cursor.fetchone()[0]
            time.sleep(0.05)
        assert waiting == 1 and change.is_alive()  # the admin waits for the delivery
        release.set()
        delivery.join(10)
        change.join(10)
    assert sorted(results, key=str) == [302, "delivered"]
    # The admin's cursor, not the one the delivery stored before it.
    assert WebhookSubscription.objects.get(pk=sub.pk).cursor == "0.0.0"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(code):
    hits: list[tuple[str, str]] = []

    class Handler(QuietHandler):
        def _answer(self):
            hits.append((self.command, self.path))
            if self.path == "/hook":
                self.send_response(code)
                self.send_header("Location", "/elsewhere")
            else:
                self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

    with serving(Handler) as port:
        sub = subscription_create(url=f"http://127.0.0.1:{port}/hook", actor=MANAGER)
        fund("a", 1)
        assert deliver_once(sub.pk).result == "failed"
    assert hits == [("POST", "/hook")]
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert state.cursor == sub.cursor  # nothing counted as delivered
    assert f"HTTP {code} to /elsewhere (redirects are not followed)" == state.last_error


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("code", "retry_after", "waits"),
    [(503, "120", 120), (429, "45", 45), (429, None, 2), (503, "soon", 2), (500, "120", 2),
     (503, "99999", 600), (429, "1", 2)],
)  # fmt: skip
def test_a_receiver_that_asks_to_wait_is_not_asked_again_before(code, retry_after, waits):
    # 2 s is the first backoff; a Retry-After of a 429 or 503 can lengthen it,
    # up to LEDGER_WEBHOOK_BACKOFF_MAX (600 s).
    class Handler(QuietHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.send_response(code)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as port:
        sub = subscription_create(url=f"http://127.0.0.1:{port}/", actor=MANAGER)
        fund("a", 1)
        now = timezone.now()
        assert deliver_once(sub.pk, now=now).result == "failed"
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert state.last_error == f"HTTP {code}"
    assert state.next_attempt_at == now + timedelta(seconds=waits)


def test_retry_after_reads_seconds_and_http_dates():
    from email.utils import format_datetime

    from ledger_core.webhooks import retry_after_seconds

    assert retry_after_seconds("30") == 30.0
    in_a_minute = format_datetime(timezone.now() + timedelta(minutes=1), usegmt=True)
    assert 55 <= retry_after_seconds(in_a_minute) <= 60
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: at once
    for value in (None, "", "-5", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00"):
        assert retry_after_seconds(value) is None, value


@pytest.mark.django_db(transaction=True)
def test_the_worker_command_delivers(settings):
    port = free_port()
    sub = subscription_create(url=f"http://127.0.0.1:{port}/", actor=MANAGER,
                              event_types=["entry.posted"])  # fmt: skip
    receiver = Receiver(port, sub.secret)
    receiver.requests = 1  # start past the first failing slot
    fund("a", 1)
    receiver.start()
    try:
        out = io.StringIO()
        call_command("deliver_webhooks", stdout=out)
    finally:
        receiver.stop()
    assert "1 events delivered" in out.getvalue()
    assert [e["type"] for e in receiver.acknowledged] == ["entry.posted"]


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    header = signature("k", 1700000000, b'{"events":[]}')
    mac = hmac.new(b"k", b'1700000000.{"events":[]}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    old = hmac.new(b"o", b'1700000000.{"events":[]}', hashlib.sha256).hexdigest()
    assert signature("k", 1700000000, b'{"events":[]}', "o") == f"t=1700000000,v1={mac},v1={old}"


@pytest.mark.django_db
def test_webhook_api(manager_client, alice_client):
    response = manager_client.post("/api/webhooks/", {"url": "https://example.test/hook",
                                                      "event_types": ["hold.voided"]},
                                   format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    assert len(response.json()["secret"]) == 64
    listing = manager_client.get("/api/webhooks/").json()
    assert listing[0]["url"] == "https://example.test/hook" and "secret" not in listing[0]
    bad = manager_client.post("/api/webhooks/", {"url": "ftp://x"}, format="json")
    assert bad.status_code == 400
    bad = manager_client.post("/api/webhooks/", {"url": "https://x.test", "event_types": ["x"]},
                              format="json")  # fmt: skip
    assert bad.status_code == 400
    assert alice_client.get("/api/webhooks/").status_code == 403
    assert alice_client.post("/api/webhooks/", {"url": "https://x.test"},
                             format="json").status_code == 403  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_subscription_is_read_changed_and_deleted_through_the_api(manager_client, alice_client):
    created = manager_client.post("/api/webhooks/", {"url": "https://example.test/hook"},
                                  format="json").json()  # fmt: skip
    one = f"/api/webhooks/{created['id']}/"
    read = manager_client.get(one)
    assert read.status_code == 200 and read.json()["url"] == "https://example.test/hook"
    assert "secret" not in read.json()
    # Refusals change nothing.
    for payload, field in [({"url": "ftp://x"}, "url"), ({"event_types": ["x"]},
                           "event_types"), ({"app": "contnet"}, "app"),
                           ({"after": "yesterday"}, "after"),
                           ({"after": str(ahead_of_the_feed())}, "after"),
                           ({"active": "maybe"}, "active")]:  # fmt: skip
        response = manager_client.patch(one, payload, format="json")
        body = response.json()
        assert response.status_code == 400 and body["code"] == "invalid", payload
        assert field in body.get("errors", {field: 0}) or body.get("field") == field, body
    assert manager_client.get(one).json() == read.json()
    # A change of the filters and a stop.
    changed = manager_client.patch(one, {"event_types": ["hold.voided"], "app": "content",
                                         "active": False}, format="json")  # fmt: skip
    assert changed.status_code == 200, changed.content
    assert (changed.json()["event_types"], changed.json()["app"], changed.json()["active"]) == (
        ["hold.voided"], "content", False)  # fmt: skip
    assert deliver_once(created["id"]).result == "disabled"
    # Failing, then re-enabled: tried again at once.
    WebhookSubscription.objects.filter(pk=created["id"]).update(
        attempts=5, failing_since="2026-01-01T00:00:00Z", next_attempt_at="2999-01-01T00:00:00Z"
    )
    resumed = manager_client.patch(one, {"active": True, "after": "0.0.0"}, format="json")
    assert resumed.status_code == 200 and resumed.json()["cursor"] == "0.0.0"
    state = WebhookSubscription.objects.get(pk=created["id"])
    assert (state.active, state.attempts, state.next_attempt_at, state.failing_since) == (
        True, 0, None, None)  # fmt: skip
    # Only managers; unknown ids are 404; a delete is final.
    assert alice_client.get(one).status_code == 403
    assert alice_client.patch(one, {"active": False}, format="json").status_code == 403
    assert alice_client.delete(one).status_code == 403
    # A new URL is tried at once, too.
    WebhookSubscription.objects.filter(pk=created["id"]).update(
        attempts=2, next_attempt_at="2999-01-01T00:00:00Z"
    )
    assert manager_client.patch(one, {"url": "https://other.test/"},
                                format="json").json()["url"] == "https://other.test/"  # fmt: skip
    state = WebhookSubscription.objects.get(pk=created["id"])
    assert (state.attempts, state.next_attempt_at) == (0, None)
    assert manager_client.delete(one).status_code == 204
    for response in (manager_client.get(one), manager_client.delete(one),
                     manager_client.patch(one, {"active": True}, format="json"),
                     manager_client.get("/api/webhooks/99999999999999999999/"),
                     manager_client.delete("/api/webhooks/2147483648/"),
                     manager_client.patch("/api/webhooks/99999999999999999999/",
                                          {"active": True}, format="json")):  # fmt: skip
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert not WebhookSubscription.objects.exists()
    assert manager_client.get("/api/webhooks/x/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_new_secret_signs_every_later_delivery_and_refused_ones_are_retried(
    manager_client, alice_client
):
    port = free_port()
    created = manager_client.post("/api/webhooks/", {"url": f"http://127.0.0.1:{port}/"},
                                  format="json").json()  # fmt: skip
    secret_url = f"/api/webhooks/{created['id']}/secret/"
    assert alice_client.post(secret_url).status_code == 403
    assert WebhookSubscription.objects.get(pk=created["id"]).secret == created["secret"]
    renewed = manager_client.post(secret_url)
    assert renewed.status_code == 200, renewed.content
    new = renewed.json()["secret"]
    assert len(new) == 64 and new != created["secret"]
    assert {k: v for k, v in renewed.json().items() if k != "secret"} == {
        k: v for k, v in created.items() if k != "secret"
    }
    assert WebhookSubscription.objects.get(pk=created["id"]).secret == new
    assert "secret" not in manager_client.get(f"/api/webhooks/{created['id']}/").json()
    for missing in ("/api/webhooks/99999/secret/", "/api/webhooks/2147483648/secret/"):
        response = manager_client.post(missing)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    fund("a", 1)
    receiver = Receiver(port, created["secret"])  # a receiver not told yet
    receiver.requests = 1  # past the first failing slot
    receiver.start()
    try:
        assert deliver_once(created["id"]).result == "failed"
        assert receiver.bad_signatures == 1 and receiver.acknowledged == []
        receiver.secret = new
        retry_due = timezone.now() + timedelta(hours=1)
        assert deliver_once(created["id"], now=retry_due).result == "delivered"
    finally:
        receiver.stop()
    assert [e["data"]["owner_id"] for e in receiver.acknowledged] == ["a"]


@pytest.mark.django_db(transaction=True)
def test_a_rotation_that_keeps_the_old_secret_signs_with_both_until_its_time_is_up(
    manager_client,
):
    port = free_port()
    created = manager_client.post("/api/webhooks/", {"url": f"http://127.0.0.1:{port}/"},
                                  format="json").json()  # fmt: skip
    one, secret_url = f"/api/webhooks/{created['id']}/", f"/api/webhooks/{created['id']}/secret/"
    assert created["previous_secret_until"] is None
    before = timezone.now()
    renewed = manager_client.post(secret_url, {"keep_old_seconds": 3600}, format="json")
    assert renewed.status_code == 200, renewed.content
    new, until = renewed.json()["secret"], renewed.json()["previous_secret_until"]
    assert new != created["secret"]
    kept_until = WebhookSubscription.objects.get(pk=created["id"]).previous_secret_until
    assert before + timedelta(seconds=3600) <= kept_until <= timezone.now() + timedelta(hours=1)
    assert manager_client.get(one).json()["previous_secret_until"] == until
    assert "secret" not in json.dumps(manager_client.get("/api/webhooks/").json()).replace(
        "previous_secret_until", ""
    )  # neither secret is ever listed
    receiver = Receiver(port, created["secret"], flaky=False)  # a receiver not told yet
    receiver.start()
    try:
        fund("a", 1)
        assert deliver_once(created["id"]).result == "delivered"  # the old secret still works
        receiver.secret = new
        fund("b", 1)
        assert deliver_once(created["id"]).result == "delivered"  # and so does the new one
        assert receiver.bad_signatures == 0
        assert [header.count("v1=") for header in receiver.signatures] == [2, 2]
        # Once its time is up the old secret signs nothing more, and is forgotten.
        fund("c", 1)
        receiver.secret = created["secret"]
        assert deliver_once(created["id"], now=kept_until).result == "failed"
        assert receiver.bad_signatures == 1 and receiver.signatures[-1].count("v1=") == 1
        state = WebhookSubscription.objects.get(pk=created["id"])
        assert (state.previous_secret, state.previous_secret_until) == ("", None)
        receiver.secret = new
        assert deliver_once(created["id"], now=kept_until + timedelta(hours=1)).result == (
            "delivered"
        )
        # A rotation without keeping (a leak) drops the kept secret at once.
        kept = manager_client.post(secret_url, {"keep_old_seconds": 600}, format="json").json()
        assert WebhookSubscription.objects.get(pk=created["id"]).previous_secret == new
        leaked = manager_client.post(secret_url)
        assert leaked.status_code == 200 and leaked.json()["previous_secret_until"] is None
        state = WebhookSubscription.objects.get(pk=created["id"])
        assert (state.previous_secret, state.previous_secret_until) == ("", None)
        fund("d", 1)
        receiver.secret = kept["secret"]
        assert deliver_once(created["id"], now=kept_until + timedelta(hours=2)).result == "failed"
        receiver.secret = leaked.json()["secret"]
        assert deliver_once(created["id"], now=kept_until + timedelta(hours=3)).result == (
            "delivered"
        )
    finally:
        receiver.stop()
    assert [e["data"]["owner_id"] for e in receiver.acknowledged] == ["a", "b", "c", "d"]


@pytest.mark.django_db(transaction=True)
def test_a_ping_tries_the_url_with_a_signed_empty_delivery_and_changes_nothing(
    manager_client, alice_client, settings
):
    port = free_port()
    created = manager_client.post("/api/webhooks/", {"url": f"http://127.0.0.1:{port}/"},
                                  format="json").json()  # fmt: skip
    ping = f"/api/webhooks/{created['id']}/ping/"
    fund("a", 1)  # an event waiting: a ping neither sends it nor moves past it
    before = WebhookSubscription.objects.values().get(pk=created["id"])
    # Nobody listening yet: the answer says why, as the admin's last error would.
    response = manager_client.post(ping)
    assert response.status_code == 200, response.content
    assert response.json()["delivered"] is False
    assert response.json()["error"].startswith("ConnectionRefusedError")
    receiver = Receiver(port, created["secret"], flaky=False)
    receiver.start()
    try:
        assert manager_client.post(ping).json() == {"delivered": True, "error": None}
        assert receiver.requests == 1 and receiver.bad_signatures == 0
        assert receiver.acknowledged == []  # the delivery had no events
        receiver.secret = "not-the-secret"  # a receiver checking the wrong secret refuses it
        assert manager_client.post(ping).json() == {"delivered": False, "error": "HTTP 500"}
        # Stopped subscriptions can be tried too; only managers may.
        manager_client.patch(f"/api/webhooks/{created['id']}/", {"active": False}, format="json")
        receiver.secret = created["secret"]
        assert manager_client.post(ping).json()["delivered"] is True
        assert alice_client.post(ping).status_code == 403
        assert receiver.requests == 3
    finally:
        receiver.stop()
    after = WebhookSubscription.objects.values().get(pk=created["id"])
    assert {**after, "active": True} == before  # cursor, failures: as they were
    missing = manager_client.post("/api/webhooks/99999/ping/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    # The destination rules apply to a ping as to any delivery.
    settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = False
    refused = manager_client.post(ping).json()
    assert refused["delivered"] is False and refused["error"].startswith("refused:")


@pytest.mark.django_db(transaction=True)
def test_the_admin_pings_subscriptions(admin_client):
    port = free_port()
    sub = subscription_create(url=f"http://127.0.0.1:{port}/", actor=MANAGER)
    response = admin_client.post(ADMIN_WEBHOOKS, {"action": "ping", "_selected_action": [sub.pk]},
                                 follow=True)  # fmt: skip
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1 and shown[0].startswith(f"Webhook #{sub.pk}: ConnectionRefusedError")
    receiver = Receiver(port, sub.secret, flaky=False)
    receiver.start()
    try:
        response = admin_client.post(
            ADMIN_WEBHOOKS, {"action": "ping", "_selected_action": [sub.pk]}, follow=True
        )
    finally:
        receiver.stop()
    assert [str(m) for m in response.context["messages"]] == [f"Webhook #{sub.pk}: acknowledged."]


@pytest.mark.django_db
@pytest.mark.parametrize("keep", [-1, 604801, 1.5, "soon", True, None, [60]])
def test_a_rotation_keeps_the_old_secret_at_most_a_week(manager_client, keep):
    body = {"keep_old_seconds": keep}
    sub = subscription_create(url="https://example.test/hook", actor=MANAGER)
    response = manager_client.post(f"/api/webhooks/{sub.pk}/secret/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert "keep_old_seconds" in response.json()["errors"]
    assert WebhookSubscription.objects.get(pk=sub.pk).secret == sub.secret  # nothing changed
    # The service refuses the same, and keeping without a new secret.
    for arguments in ({"new_secret": True, "keep_old_seconds": 604801},
                      {"keep_old_seconds": 60}):  # fmt: skip
        with pytest.raises(InvalidEntry):
            subscription_change(sub.pk, actor=MANAGER, **arguments)
    assert manager_client.post(f"/api/webhooks/{sub.pk}/secret/", {"keep_old_seconds": 604800},
                               format="json").status_code == 200  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["renew_secret", "renew_secret_keeping_old"])
def test_the_admin_gives_new_secrets_shown_once(admin_client, action):
    subs = [subscription_create(url=f"https://example.test/{n}", actor=MANAGER) for n in "ab"]
    before = timezone.now()
    response = admin_client.post(
        ADMIN_WEBHOOKS, {"action": action, "_selected_action": [sub.pk for sub in subs]},
        follow=True,
    )  # fmt: skip
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    for sub in subs:
        state = WebhookSubscription.objects.get(pk=sub.pk)
        assert state.secret != sub.secret
        text = f"Webhook #{sub.pk}: its new signing secret, shown only now: {state.secret}"
        if action == "renew_secret":
            assert (state.previous_secret, state.previous_secret_until) == ("", None)
            assert text in shown
        else:  # the old one signs beside it for a day
            assert state.previous_secret == sub.secret
            day = timedelta(days=1)
            assert before + day <= state.previous_secret_until <= timezone.now() + day
            until = f"{state.previous_secret_until:%Y-%m-%d %H:%M:%S} UTC"
            assert f"{text} (the old one signs too until {until})" in shown
    page = admin_client.get(f"{ADMIN_WEBHOOKS}{subs[0].pk}/change/").content.decode()
    state = WebhookSubscription.objects.get(pk=subs[0].pk)
    assert state.secret not in page and subs[0].secret not in page
    if action == "renew_secret_keeping_old":
        assert "Previous secret until" in page


def test_a_subscription_to_an_app_that_is_not_registered_is_refused(manager_client):
    # Entries carry a registered app's label: a typo would subscribe to nothing.
    response = manager_client.post(
        "/api/webhooks/", {"url": "https://example.test/hook", "app": "contnet"}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["field"] == "app"
    assert "known apps: content, rewards" in body["detail"]
    assert not WebhookSubscription.objects.exists()
    for app in ("content", ""):
        response = manager_client.post(
            "/api/webhooks/", {"url": "https://example.test/hook", "app": app}, format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["app"] == app


def test_the_readme_receiver_check_accepts_our_signature_and_nothing_else():
    verified = readme_verifier()
    body, now = b'{"events":[]}', int(time.time())
    header = signature("s3cret", now, body)
    assert verified("s3cret", header, body)
    assert not verified("s3cret", header, body + b" ")
    assert not verified("other", header, body)
    assert not verified("s3cret", signature("s3cret", now - 3600, body), body)
    # During a rotation that keeps the old secret, either secret verifies.
    both = signature("new", now, body, "old")
    assert both.count("v1=") == 2 and both.startswith(f"t={now},")
    assert verified("new", both, body) and verified("old", both, body)
    assert not verified("other", both, body)
    # A malformed header is refused, not an exception in the receiver.
    for header in ("", "v1=abc", f"t={now}", f"t=x,{both[len(f't={now},'):]}", "t,v1",
                   f"t={now},t={now},v1=é", both.replace("v1=", "v2=")):  # fmt: skip
        assert not verified("new", header, body), header


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "https://api.localhost/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_a_subscription_to_a_non_public_address_is_refused(manager_client, settings, url):
    settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = False
    response = manager_client.post("/api/webhooks/", {"url": url}, format="json")
    assert response.status_code == 400, response.content
    assert "not a public address" in str(response.json())
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_delivery_to_a_host_that_is_not_public_is_refused_and_nothing_is_sent(settings, host):
    hits: list[str] = []

    class Handler(QuietHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

    with serving(Handler) as port:
        # Allowed when it was subscribed (or changed in the admin), refused now.
        sub = subscription_create(url=f"http://{host}:{port}/h", actor=MANAGER)
        settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = False
        fund("a", 1)
        assert deliver_once(sub.pk).result == "failed"
        state = WebhookSubscription.objects.get(pk=sub.pk)
        assert (
            state.last_error.startswith("refused: ") and "not a public address" in state.last_error
        )
        assert state.cursor == sub.cursor
        assert hits == []
        settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = True
        WebhookSubscription.objects.filter(pk=sub.pk).update(next_attempt_at=None)
        assert deliver_once(sub.pk).result == "delivered"
        assert hits == ["/h"]


def test_a_name_resolving_to_a_private_address_is_refused_when_connecting(settings):
    from ledger_core.webhooks import DestinationRefused, _connect

    settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(DestinationRefused, match="localhost resolves to .*not a public address"):
        _connect("localhost", 80, 1.0)


def test_public_addresses_are_allowed():
    from ledger_core.webhooks import destination_problem, is_public

    assert is_public("8.8.8.8") and is_public("2001:4860:4860::8888")
    assert not is_public("192.168.1.1") and not is_public("fe80::1%eth0")
    assert destination_problem("https://93.184.216.34/hook") is None
    assert destination_problem("https://hooks.example.com:8443/x?y=1") is None
    assert destination_problem("ftp://example.com/") == "url must be an http(s) URL."
    assert destination_problem("http://example.com:99999/") == "url must be an http(s) URL."


@pytest.fixture
def localhost_tls(tmp_path):
    """A TLS server context with a self-signed certificate for the name
    localhost (only), and the certificate's file."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603 - a self-signed certificate for localhost
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],  # fmt: skip
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return tls, cert


@pytest.mark.django_db(transaction=True)
def test_https_delivery_verifies_the_certificate_against_the_host_name(localhost_tls, monkeypatch):
    received: list[bytes] = []

    class Handler(QuietHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

    tls, cert = localhost_tls
    with serving(Handler, tls) as port:
        sub = subscription_create(url=f"https://localhost:{port}/h", actor=MANAGER)
        fund("a", 1)
        # Not trusted: refused by the certificate check.
        assert deliver_once(sub.pk).result == "failed"
        assert "CERTIFICATE_VERIFY_FAILED" in WebhookSubscription.objects.get(pk=sub.pk).last_error
        assert received == []
        # Trusted (OpenSSL's SSL_CERT_FILE), for the name it was issued to: delivered.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        WebhookSubscription.objects.filter(pk=sub.pk).update(next_attempt_at=None)
        assert deliver_once(sub.pk).result == "delivered"
        assert len(received) == 1 and json.loads(received[0])["events"]
        # The same certificate for another name (the address): refused.
        other = subscription_create(url=f"https://127.0.0.1:{port}/h", actor=MANAGER)
        fund("a", 1, nonce="second")
        assert deliver_once(other.pk).result == "failed"
        assert (
            "CERTIFICATE_VERIFY_FAILED" in WebhookSubscription.objects.get(pk=other.pk).last_error
        )


# --- through an egress proxy -------------------------------------------------


REFUSED_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"
)


class ConnectProxy:
    """A real HTTP proxy on 127.0.0.1 that serves ``CONNECT`` (nothing else):
    it records each request head, asks for ``credentials`` (Basic) if given,
    answers 502 when it cannot reach the target, else tunnels bytes both ways."""

    def __init__(self, credentials: str | None = None) -> None:
        self.heads: list[list[str]] = []
        self.tunnels = 0
        self.expected = (
            None
            if credentials is None
            else "Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()).decode()
        )

    @property
    def targets(self) -> list[str]:
        return [head[0].split(" ")[1] for head in self.heads]

    @contextlib.contextmanager
    def running(self) -> Iterator[int]:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = []
                while line := self.rfile.readline(8192).decode("latin-1").rstrip("\r\n"):
                    head.append(line)
                proxy.heads.append(head)
                if proxy.expected is not None and proxy.expected not in head:
                    self.wfile.write(REFUSED_407)
                    return
                host, _, port = head[0].split(" ")[1].rpartition(":")
                try:
                    upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
                except OSError:
                    self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                proxy.tunnels += 1
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                back = threading.Thread(target=pump, args=(upstream.recv, self.connection))
                back.start()
                pump(self.rfile.read1, upstream)
                back.join(5)
                upstream.close()

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()


def pump(read: Any, destination: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := read(65536):
            destination.sendall(data)
    with contextlib.suppress(OSError):
        destination.shutdown(socket.SHUT_WR)


class Recording(QuietHandler):
    """A receiver that keeps each request's path, Host and body."""

    seen: list[tuple[str, str, bytes]]

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers["Host"], body))
        self.send_response(204)
        self.end_headers()


def recording() -> type[Recording]:
    return type("Receiver", (Recording,), {"seen": []})


@pytest.mark.django_db(transaction=True)
def test_delivery_through_an_egress_proxy_tunnels_to_the_address_it_checked(settings):
    receiver, proxy = recording(), ConnectProxy()
    with serving(receiver) as port, proxy.running() as proxy_port:
        settings.LEDGER_WEBHOOK_PROXY = f"http://127.0.0.1:{proxy_port}"
        sub = subscription_create(url=f"http://localhost:{port}/h?x=1", actor=MANAGER)
        fund("a", 1)
        assert deliver_once(sub.pk).result == "delivered"
    [(path, host, body)] = receiver.seen
    assert (path, host) == ("/h?x=1", f"localhost:{port}")
    assert [e["owner_id"] for e in json.loads(body)["events"]] == ["a"]
    # The proxy was asked for addresses the worker resolved and checked, not
    # for the name (it would resolve that itself); localhost may be ::1 first,
    # which the receiver does not listen on (502), and then 127.0.0.1.
    assert proxy.tunnels == 1 and proxy.targets[-1] == f"127.0.0.1:{port}"
    assert set(proxy.targets) <= {f"127.0.0.1:{port}", f"[::1]:{port}"}
    assert all(f"Host: {target}" in head for target, head in zip(proxy.targets, proxy.heads))


@pytest.mark.django_db(transaction=True)
def test_the_proxy_credentials_are_sent_and_a_refusal_is_a_failed_delivery(settings):
    receiver, proxy = recording(), ConnectProxy(credentials="hook user:pa:ss")
    with serving(receiver) as port, proxy.running() as proxy_port:
        sub = subscription_create(url=f"http://127.0.0.1:{port}/h", actor=MANAGER)
        fund("a", 1)
        settings.LEDGER_WEBHOOK_PROXY = f"http://hook%20user:wrong@127.0.0.1:{proxy_port}"
        assert deliver_once(sub.pk).result == "failed"
        state = WebhookSubscription.objects.get(pk=sub.pk)
        assert "answered 'HTTP/1.1 407 Proxy Authentication Required'" in state.last_error
        assert "wrong" not in state.last_error and f"127.0.0.1:{proxy_port}" in state.last_error
        assert (state.cursor, receiver.seen) == (sub.cursor, [])
        settings.LEDGER_WEBHOOK_PROXY = f"http://hook%20user:pa%3Ass@127.0.0.1:{proxy_port}"
        WebhookSubscription.objects.filter(pk=sub.pk).update(next_attempt_at=None)
        assert deliver_once(sub.pk).result == "delivered"
    assert len(receiver.seen) == 1 and proxy.tunnels == 1


@pytest.mark.django_db(transaction=True)
def test_a_proxy_that_is_down_fails_the_delivery_and_is_named(settings):
    receiver = recording()
    down = free_port()
    with serving(receiver) as port:
        settings.LEDGER_WEBHOOK_PROXY = f"http://127.0.0.1:{down}"
        sub = subscription_create(url=f"http://127.0.0.1:{port}/h", actor=MANAGER)
        fund("a", 1)
        assert deliver_once(sub.pk).result == "failed"
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert f"proxy 127.0.0.1:{down}: " in state.last_error and state.cursor == sub.cursor
    assert receiver.seen == []


@pytest.mark.django_db(transaction=True)
def test_with_a_proxy_a_host_that_is_not_public_is_still_refused(settings):
    receiver, proxy = recording(), ConnectProxy()
    with serving(receiver) as port, proxy.running() as proxy_port:
        sub = subscription_create(url=f"http://localhost:{port}/h", actor=MANAGER)
        settings.LEDGER_WEBHOOK_ALLOW_PRIVATE = False
        settings.LEDGER_WEBHOOK_PROXY = f"http://127.0.0.1:{proxy_port}"
        fund("a", 1)
        assert deliver_once(sub.pk).result == "failed"
    state = WebhookSubscription.objects.get(pk=sub.pk)
    assert state.last_error.startswith("refused: ") and "not a public address" in state.last_error
    assert (proxy.heads, receiver.seen) == ([], [])


@pytest.mark.django_db(transaction=True)
def test_https_through_the_proxy_verifies_the_certificate_against_the_host_name(
    settings, localhost_tls, monkeypatch
):
    receiver, proxy = recording(), ConnectProxy()
    tls, cert = localhost_tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with serving(receiver, tls) as port, proxy.running() as proxy_port:
        settings.LEDGER_WEBHOOK_PROXY = f"http://127.0.0.1:{proxy_port}"
        sub = subscription_create(url=f"https://localhost:{port}/h", actor=MANAGER)
        fund("a", 1)
        assert deliver_once(sub.pk).result == "delivered", WebhookSubscription.objects.get(
            pk=sub.pk
        ).last_error
    # The tunnel went to an address; TLS was checked against "localhost".
    assert proxy.targets[-1] == f"127.0.0.1:{port}" and len(receiver.seen) == 1


@pytest.mark.parametrize(
    "value",
    ["proxy.internal:3128", "https://proxy.internal:3128", "http://proxy.internal",
     "http://proxy.internal:3128/path", "http://:3128", "http://u:secret@proxy:99999", 3128],
)  # fmt: skip
def test_a_bad_proxy_setting_is_a_system_check_error(settings, value):
    from ledger_core.checks import check_webhook_proxy

    settings.LEDGER_WEBHOOK_PROXY = value
    [error] = check_webhook_proxy()
    assert error.id == "ledger_core.E010" and "http://[user:password@]host:port" in error.msg
    assert "secret" not in error.msg
    settings.LEDGER_WEBHOOK_PROXY = "http://u:secret@proxy.internal:3128"
    assert check_webhook_proxy() == []


@pytest.mark.django_db(transaction=True)
def test_a_proxy_that_trickles_its_answer_is_given_up_on_after_the_timeout(settings):
    class Trickle(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline(8192).strip():
                pass
            with contextlib.suppress(OSError):
                for byte in b"HTTP/1.1 200 Connection established, slowly"[:30]:
                    self.wfile.write(bytes([byte]))
                    time.sleep(0.1)  # 3 s in all, never a blank line

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.LEDGER_WEBHOOK_PROXY = f"http://127.0.0.1:{server.server_address[1]}"
        settings.LEDGER_WEBHOOK_TIMEOUT = 0.5
        sub = subscription_create(url="http://127.0.0.1:9/h", actor=MANAGER)
        fund("a", 1)
        started = time.monotonic()
        assert deliver_once(sub.pk).result == "failed"
        assert time.monotonic() - started < 2.5  # each byte came well within the timeout
    finally:
        server.shutdown()
        server.server_close()
    assert (
        "no complete answer to CONNECT in time"
        in WebhookSubscription.objects.get(pk=sub.pk).last_error
    )


# --- receivers that answer badly -------------------------------------------------


@contextlib.contextmanager
def raw_receiver(answer: Any) -> Iterator[tuple[int, list[bytes]]]:
    """A receiver on a raw socket: it reads each POST whole (kept in the
    yielded list), then ``answer(wfile)`` writes whatever it likes."""
    bodies: list[bytes] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            length = 0
            while line := self.rfile.readline(65536).strip():
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            bodies.append(self.rfile.read(length))
            with contextlib.suppress(OSError):
                answer(self.wfile)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], bodies
    finally:
        server.shutdown()
        server.server_close()


def deliver_to(port: int) -> tuple[str, str, float]:
    """One delivery of a new event to ``port``: its result, the error kept, the seconds."""
    sub = subscription_create(url=f"http://127.0.0.1:{port}/h", actor=MANAGER)
    fund("a", 1)
    started = time.monotonic()
    result = deliver_once(sub.pk).result
    return result, WebhookSubscription.objects.get(pk=sub.pk).last_error, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_trickles_its_answer_is_given_up_on_after_the_timeout(settings):
    def trickle(wfile: Any) -> None:
        for byte in b"HTTP/1.1 204 No Content\r\nX-Slow: yes"[:30]:
            wfile.write(bytes([byte]))
            time.sleep(0.1)  # 3 s in all, each byte well within the timeout

    settings.LEDGER_WEBHOOK_TIMEOUT = 0.5
    with raw_receiver(trickle) as (port, bodies):
        result, error, seconds = deliver_to(port)
    assert (result, len(bodies)) == ("failed", 1)
    assert "no complete answer to the POST in time" in error and seconds < 2.5


@pytest.mark.django_db(transaction=True)
def test_a_receivers_body_is_not_read(settings):
    # A 2xx with an endless body: acknowledged at once, the body left unread.
    def endless(wfile: Any) -> None:
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
        for _ in range(200):  # 20 s at most, while the worker has long moved on
            wfile.write(b"x" * 65536)
            time.sleep(0.1)

    settings.LEDGER_WEBHOOK_TIMEOUT = 5
    with raw_receiver(endless) as (port, bodies):
        result, error, seconds = deliver_to(port)
    assert (result, error, len(bodies)) == ("delivered", "", 1) and seconds < 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("answer", "result", "error"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "delivered", ""),
        (b"HTTP/1.0 503 Busy\r\nRetry-After: 1\r\n\r\n", "failed", "HTTP 503"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "failed", "OSError: not an HTTP answer to the POST"),
        # Latin-1 superscripts are digits to str.isdigit(), not to int().
        (b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", "failed", "OSError: not an HTTP answer to the POST"),
        (b"HTTP/1.1 204", "failed", "closed the connection before answering the POST"),
    ],
)
def test_what_a_receiver_answers_decides_the_delivery(answer, result, error):
    with raw_receiver(lambda wfile: wfile.write(answer)) as (port, bodies):
        got, kept, _ = deliver_to(port)
    assert got == result and (error in kept if error else kept == ""), kept
    assert len(bodies) == 1 and json.loads(bodies[0])["events"]
