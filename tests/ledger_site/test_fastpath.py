"""The fast lane for posts and balance reads answers exactly as the full stack does.

Two real HTTP servers run the site's WSGI handler on loopback, one with the
fast lane and one without (``LEDGER_FAST_POST=False``). Every scenario is sent
to both, each against its own owners in the same starting state, and the
answers are compared: status, headers and body (entry ids and timestamps
aside). The fast lane's own counter shows which requests it served.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.test import override_settings
from django.urls import resolve
from prometheus_client import REGISTRY
from rest_framework.versioning import AcceptHeaderVersioning

from ledger_core.services import entry_post
from ledger_site.fastpath import FAST_PATH_MIDDLEWARE, LedgerWSGIHandler
from ledger_site.jwt import token_pair_for
from tests.conftest import SYSTEM
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# Each side's server port and owner names, made alike for comparison.
_ALIKE = {"1": "127.0.0.1:<port>", "-": "-side"}

# Headers whose values differ between any two answers.
VOLATILE = {"date", "server", "content-length"}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None


class Site:
    """The site's WSGI handler behind a threaded HTTP server on loopback."""

    def __init__(self, handler: LedgerWSGIHandler) -> None:
        self.server = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=True)
        self.server.set_app(handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def send(
        self,
        body: Any,
        token: str | None,
        *,
        path: str = "/api/content/ledger/",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        method: str = "POST",
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {"Content-Type": "application/json", "X-Request-ID": "req-fast-1"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        sent = {key: value for key, value in sent.items() if value is not None}
        data = raw if raw is not None else json.dumps(body).encode()
        if method == "GET":
            data = None
            sent.pop("Content-Type")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()


def fast_lane(kind: str, outcome: str) -> float:
    """``ledger_fast_posts_total`` / ``ledger_fast_reads_total`` for ``outcome``."""
    return REGISTRY.get_sample_value(f"ledger_fast_{kind}_total", {"outcome": outcome}) or 0.0


def fast_posts(outcome: str) -> float:
    return fast_lane("posts", outcome)


def fast_reads(outcome: str) -> float:
    return fast_lane("reads", outcome)


def check_served(kind: str, sites, people, make) -> None:
    served = fast_lane(kind, "served")
    fast, full = both(sites, people, make)
    assert fast_lane(kind, "served") == served + 1
    assert_same(fast, full)


def check_passed(kind: str, sites, people, make) -> None:
    served, passed = fast_lane(kind, "served"), fast_lane(kind, "passed")
    fast, full = both(sites, people, make)
    assert fast_lane(kind, "served") == served
    assert fast_lane(kind, "passed") == passed + 1
    assert_same(fast, full)


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    fast = Site(LedgerWSGIHandler())
    with override_settings(LEDGER_FAST_POST=False):
        full = Site(LedgerWSGIHandler())
    assert fast.server.get_app().fast and not full.server.get_app().fast
    yield fast, full
    fast.close()
    full.close()


def token(user) -> str:
    return str(token_pair_for(user).access_token)


def normalised(body: bytes) -> Any:
    """The body with each side's owner names made alike, entry ids and times aside."""
    if not body.startswith((b"{", b"[")):
        return body
    data = json.loads(body)
    if isinstance(data, dict):
        for key in ("id", "created_at", "entry_id", "updated_at"):
            if key in data:
                data[key] = type(data[key]).__name__
        if data.get("code") == "rate_limited":
            data["detail"] = re.sub(r"\d+", "N", data["detail"])
    return json.loads(json.dumps(data).replace("-fast", "-side").replace("-full", "-side"))


def assert_same(fast: tuple, full: tuple) -> None:
    (f_status, f_headers, f_body), (s_status, s_headers, s_body) = fast, full
    assert f_status == s_status, (f_body, s_body)
    assert normalised(f_body) == normalised(s_body)
    volatile = set(VOLATILE)
    for headers, body in ((f_headers, f_body), (s_headers, s_body)):
        assert int(headers.get("content-length", len(body))) == len(body)
        if not re.fullmatch(r"req-fast-1|[0-9a-f]{32}", headers["x-request-id"]):
            raise AssertionError(headers["x-request-id"])
        if headers["x-request-id"] != "req-fast-1":
            volatile.add("x-request-id")  # generated: one per request
        if f_status == 429:
            volatile.add("retry-after")  # each user's window ends at its own time

    def kept(headers: dict[str, str]) -> dict[str, str]:
        # Redirects name the server (each side has its own port) and the owner.
        return {
            k: re.sub(r"127\.0\.0\.1:\d+|-fast|-full", lambda m: _ALIKE[m[0][:1]], v)
            for k, v in headers.items()
            if k not in volatile
        }

    assert kept(f_headers) == kept(s_headers)


@pytest.fixture
def people(db) -> dict[str, Any]:
    manager = UserFactory(username="fp-manager", perms=["ledger_core.post_any_entry"])
    made: dict[str, Any] = {"manager": manager, "manager-token": token(manager)}
    for side in ("fast", "full"):
        for role in ("owner", "poor", "idle"):
            user = UserFactory(username=f"fp-{role}-{side}")
            made[f"{role}-{side}"] = user
            made[f"{role}-{side}-token"] = token(user)
        entry_post(
            owner_id=f"fp-owner-{side}",
            operation="CREDIT_ADD",
            nonce="seed",
            app="content",
            actor=SYSTEM,
            amount=3,
        )
    return made


def both(sites, people, make) -> tuple[tuple, tuple]:
    """Send ``make(side)`` (body, token, options) to each site."""
    answers = []
    for site, side in zip(sites, ("fast", "full"), strict=True):
        body, who, options = make(side)
        answers.append(site.send(body, people[f"{who}-token"] if who else None, **options))
    return answers[0], answers[1]


def post(side: str, operation: str, nonce: str, owner: str = "owner", **extra: Any) -> dict:
    return {"owner_id": f"fp-{owner}-{side}", "operation": operation, "nonce": nonce, **extra}


SERVED = [
    # (name, make(side) -> (body, token owner, request options))
    ("manager credit", lambda s: (post(s, "CREDIT_ADD", "n1", amount=5), "manager", {})),
    ("replay", lambda s: (post(s, "CREDIT_ADD", "n1", amount=5), "manager", {})),
    ("nonce conflict", lambda s: (post(s, "CREDIT_ADD", "n1", amount=6), "manager", {})),
    ("owner spend", lambda s: (post(s, "CREDIT_SPEND", "n2"), f"owner-{s}", {})),
    (
        "with metadata and Accept json",
        lambda s: (
            post(s, "CREDIT_SPEND", "n3", metadata={"reason": "café ☕", "n": [1, 2.5, None]}),
            f"owner-{s}",
            {"headers": {"Accept": "application/json"}},
        ),
    ),
    ("insufficient", lambda s: (post(s, "CONTENT_CREATION", "n4", "poor"), f"poor-{s}", {})),
    ("someone else's", lambda s: (post(s, "CREDIT_SPEND", "n5", "poor"), f"owner-{s}", {})),
    ("owner may not credit", lambda s: (post(s, "CREDIT_ADD", "n6"), f"owner-{s}", {})),
    ("unknown operation", lambda s: (post(s, "NOPE", "n7"), "manager", {})),
    (
        "bad owner id",
        lambda s: ({**post(s, "CREDIT_SPEND", "n8"), "owner_id": "a b"}, "manager", {}),
    ),
    ("bad nonce", lambda s: (post(s, "CREDIT_SPEND", "with space"), "manager", {})),
    ("owner amount", lambda s: (post(s, "CREDIT_SPEND", "n9", amount=-2), f"owner-{s}", {})),
    ("amount too big", lambda s: (post(s, "CREDIT_ADD", "n10", amount=10**9), "manager", {})),
    (
        "metadata too big",
        lambda s: (post(s, "CREDIT_ADD", "n11", metadata={"x": "y" * 5000}), "manager", {}),
    ),
    (
        "Accept */*",
        lambda s: (post(s, "CREDIT_ADD", "n12"), "manager", {"headers": {"Accept": "*/*"}}),
    ),
    (
        "no request id",
        lambda s: (post(s, "CREDIT_ADD", "n13"), "manager", {"headers": {"X-Request-ID": None}}),
    ),
]


def manager_credit(nonce: str, **options: Any):
    """The manager's CREDIT_ADD of ``nonce`` to each side's owner, sent with ``options``."""
    return lambda s: (post(s, "CREDIT_ADD", nonce), "manager", options)


def raw_body(raw: bytes):
    return lambda s: (None, "manager", {"raw": raw})


PASSED = [
    ("amount as text", lambda s: (post(s, "CREDIT_ADD", "p1", amount="5"), "manager", {})),
    ("unknown field", lambda s: ({**post(s, "CREDIT_ADD", "p2"), "extra": 1}, "manager", {})),
    ("not an object", lambda s: ([1, 2], "manager", {})),
    ("malformed JSON", raw_body(b'{"owner_id": ')),
    (
        "NaN",
        raw_body(b'{"owner_id":"x","operation":"CREDIT_ADD","nonce":"p3","metadata":{"a":NaN}}'),
    ),
    ("not UTF-8", raw_body(b'{"owner_id":"\xff","operation":"CREDIT_ADD","nonce":"p4"}')),
    ("no token", lambda s: (post(s, "CREDIT_ADD", "p5"), None, {})),
    ("bad token", manager_credit("p6", headers={"Authorization": "Bearer x.y.z"})),
    ("three-part header", manager_credit("p7", headers={"Authorization": "Bearer a b"})),
    ("form body", manager_credit("p8", headers={"Content-Type": "text/plain"})),
    ("query string", manager_credit("p9", path="/api/content/ledger/?format=json")),
    ("cookie", manager_credit("p10", headers={"Cookie": "sessionid=abc"})),
    ("unknown host", manager_credit("p11", headers={"Host": "evil.example"})),
    ("empty Accept", manager_credit("p12", headers={"Accept": ""})),
]


def test_fast_lane_is_on_for_the_shipped_site(settings):
    assert list(settings.MIDDLEWARE) == FAST_PATH_MIDDLEWARE
    assert LedgerWSGIHandler().fast


@pytest.mark.parametrize(("name", "make"), SERVED, ids=[name for name, _ in SERVED])
def test_served_posts_answer_as_the_full_stack(sites, people, name, make):
    for _, earlier in SERVED[: [n for n, _ in SERVED].index(name)]:
        both(sites, people, earlier)  # the same history on both sides
    check_served("posts", sites, people, make)


@pytest.mark.parametrize(("name", "make"), PASSED, ids=[name for name, _ in PASSED])
def test_other_posts_go_to_the_full_stack_untouched(sites, people, name, make):
    check_passed("posts", sites, people, make)


def test_browsable_api_request_is_not_taken(sites, people):
    served = fast_posts("served")
    fast, full = both(
        sites,
        people,
        lambda s: (post(s, "CREDIT_ADD", "b1"), "manager", {"headers": {"Accept": "text/html"}}),
    )
    assert fast_posts("served") == served
    assert fast[0] == full[0] == 201
    assert fast[1]["content-type"] == full[1]["content-type"] == "text/html; charset=utf-8"
    served = fast_reads("served")
    fast, full = both(sites, people, read("owner", "owner-{side}", headers={"Accept": "text/html"}))
    assert fast_reads("served") == served
    assert fast[0] == full[0] == 200
    assert fast[1]["content-type"] == full[1]["content-type"] == "text/html; charset=utf-8"


def test_inactive_user_is_handed_over_counted_once(sites, people, settings):
    settings.RATE_LIMIT_LEDGER_WRITE = "4/m"
    for side in ("fast", "full"):
        idle = people[f"idle-{side}"]
        idle.is_active = False
        idle.save()
    handed = fast_posts("handed_over")
    for n in range(3):
        fast, full = both(
            sites,
            people,
            lambda s, n=n: (post(s, "CREDIT_SPEND", f"i{n}", "idle"), f"idle-{s}", {}),
        )
        assert fast[0] == 401 and json.loads(fast[2])["code"] == "authentication_failed"
        assert_same(fast, full)
    assert fast_posts("handed_over") == handed + 3
    # Each refused request was counted once, by the fast lane or by the full
    # stack, not by both: a fourth request is within the limit of 4 on both sides.
    for side in ("fast", "full"):
        idle = people[f"idle-{side}"]
        idle.is_active = True
        idle.save()
    fast, full = both(
        sites, people, lambda s: (post(s, "CREDIT_ADD", "i3", "idle", amount=1), "manager", {})
    )
    assert fast[0] == 201
    fast, full = both(
        sites, people, lambda s: (post(s, "CREDIT_SPEND", "i4", "idle"), f"idle-{s}", {})
    )
    assert fast[0] == full[0] == 201
    assert_same(fast, full)


def test_request_metrics_and_log_lines_match(sites, people, caplog):
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    view = resolve("/api/content/ledger/").view_name
    labels = {"status": "201", "view": view, "method": "POST"}
    names = [
        ("django_http_responses_total_by_status_view_method_total", labels),
        ("django_http_requests_total_by_method_total", {"method": "POST"}),
        ("django_http_requests_before_middlewares_total", {}),
        ("django_http_responses_before_middlewares_total", {}),
        (
            "django_http_requests_latency_seconds_by_view_method_count",
            {"view": view, "method": "POST"},
        ),
        ("ledger_entries_total", {"app": "content", "operation": "CREDIT_ADD"}),
    ]
    deltas = []
    for site, side in zip(sites, ("fast", "full"), strict=True):
        before = [sample(name, **lab) for name, lab in names]
        caplog.clear()
        with caplog.at_level("INFO"):
            status, _, _ = site.send(post(side, "CREDIT_ADD", "m1"), people["manager-token"])
        assert status == 201
        deltas.append(
            [sample(name, **lab) - b for (name, lab), b in zip(names, before, strict=True)]
        )
        lines = {
            r.name: r
            for r in caplog.records
            if r.name.startswith(("ledger_site.request", "ledger_core.decisions"))
        }
        request_line = lines["ledger_site.request"]
        assert (request_line.method, request_line.path, request_line.status, request_line.user) == (
            "POST",
            "/api/content/ledger/",
            201,
            "fp-manager",
        )
        assert lines["ledger_core.decisions"].getMessage() == "ledger.posted"
    assert deltas[0] == deltas[1] == [1.0] * len(names), deltas


def test_fast_lane_off_by_setting_and_in_debug(settings):
    settings.LEDGER_FAST_POST = False
    assert not LedgerWSGIHandler().fast
    settings.LEDGER_FAST_POST = True
    settings.DEBUG = True
    assert not LedgerWSGIHandler().fast
    settings.DEBUG = False
    settings.MIDDLEWARE = [*FAST_PATH_MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]
    assert not LedgerWSGIHandler().fast


def test_customised_viewset_is_served_by_drf():
    from ledger_core.api.views import LedgerViewSet
    from ledger_site.fastpath import _viewset_is_plain

    class Custom(LedgerViewSet):
        app_label = "content"

        def create(self, request):
            return super().create(request)

    class Throttled(LedgerViewSet):
        app_label = "content"
        throttle_classes = []

    class Versioned(LedgerViewSet):
        app_label = "content"
        versioning_class = AcceptHeaderVersioning

    class Plain(LedgerViewSet):
        app_label = "content"

    assert _viewset_is_plain(Plain)
    assert not _viewset_is_plain(Custom)
    assert not _viewset_is_plain(Throttled)
    assert not _viewset_is_plain(Versioned)


def read(owner: str, who: str, suffix: str = "", **options: Any):
    """A balance read of ``fp-<owner>-<side>`` by ``who`` (formatted with the side)."""
    return lambda s: (
        None,
        who.format(side=s),
        {"method": "GET", "path": f"/api/content/ledger/fp-{owner}-{s}/{suffix}", **options},
    )


READS_SERVED = [
    ("own balance", read("owner", "owner-{side}")),
    ("own balance again (cached)", read("owner", "owner-{side}")),
    ("owner without entries", read("idle", "idle-{side}")),
    ("manager reads anyone", read("poor", "manager")),
    ("someone else's", read("poor", "owner-{side}")),
    ("Accept json", read("owner", "owner-{side}", headers={"Accept": "application/json"})),
]
READS_PASSED = [
    ("query string", read("owner", "owner-{side}", suffix="?format=json")),
    ("no token", read("owner", "")),
    ("cookie", read("owner", "owner-{side}", headers={"Cookie": "a=b"})),
]


@pytest.mark.parametrize(("name", "make"), READS_SERVED, ids=[n for n, _ in READS_SERVED])
def test_served_reads_answer_as_the_full_stack(sites, people, name, make):
    check_served("reads", sites, people, make)


@pytest.mark.parametrize(("name", "make"), READS_PASSED, ids=[n for n, _ in READS_PASSED])
def test_other_reads_go_to_the_full_stack_untouched(sites, people, name, make):
    check_passed("reads", sites, people, make)


def test_read_after_post_sees_the_post_on_both_sides(sites, people):
    for n in range(3):
        both(sites, people, lambda s, n=n: (post(s, "CREDIT_SPEND", f"w{n}"), f"owner-{s}", {}))
        fast, full = both(sites, people, read("owner", "owner-{side}"))
        assert json.loads(fast[2])["balance"] == json.loads(full[2])["balance"] == 2 - n
        assert_same(fast, full)


@pytest.mark.parametrize(
    ("kind", "setting", "ok"),
    [("posts", "RATE_LIMIT_LEDGER_WRITE", 201), ("reads", "RATE_LIMIT_LEDGER_READ", 200)],
)
def test_rate_limit_counts_each_request_once(sites, people, settings, kind, setting, ok):
    setattr(settings, setting, "3/m")
    handed = fast_lane(kind, "handed_over")
    statuses = []
    for n in range(5):
        if kind == "posts":  # the owner's balance of 3 covers three spends
            make = lambda s, n=n: (post(s, "CREDIT_SPEND", f"r{n}"), f"owner-{s}", {})  # noqa: E731
        else:
            make = read("owner", "owner-{side}")
        fast, full = both(sites, people, make)
        assert_same(fast, full)
        statuses.append(fast[0])
    # The fourth and fifth are over the limit: counted by the fast lane, then
    # answered (429, Retry-After) by the full stack without a second count.
    assert statuses == [ok, ok, ok, 429, 429]
    assert fast_lane(kind, "handed_over") == handed + 2
    assert int(fast[1]["retry-after"]) >= 1 and int(full[1]["retry-after"]) >= 1


HTTPS = {
    "SECURE_SSL_REDIRECT": True,
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_HSTS_SECONDS": 3600,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
}


def test_https_enforced_site_answers_alike(people):
    # The security middleware reads its settings when it is built: both
    # handlers are built, and answer, with HTTPS enforced behind a proxy.
    with override_settings(**HTTPS):
        fast = Site(LedgerWSGIHandler())
        with override_settings(LEDGER_FAST_POST=False):
            full = Site(LedgerWSGIHandler())
        try:
            pair = (fast, full)
            proxied = {"headers": {"X-Forwarded-Proto": "https"}}
            check_served(
                "posts", pair, people, lambda s: (post(s, "CREDIT_ADD", "h1"), "manager", proxied)
            )
            answers = both(
                pair, people, lambda s: (post(s, "CREDIT_ADD", "h1"), "manager", proxied)
            )
            assert answers[0][1]["strict-transport-security"] == "max-age=3600; includeSubDomains"
            check_served("reads", pair, people, read("owner", "owner-{side}", **proxied))
            # Plain HTTP is redirected by the full stack, for both.
            check_passed(
                "posts", pair, people, lambda s: (post(s, "CREDIT_ADD", "h2"), "manager", {})
            )
            check_passed("reads", pair, people, read("owner", "owner-{side}"))
            fast_answer, _ = both(pair, people, read("owner", "owner-{side}"))
            assert fast_answer[0] == 301
        finally:
            fast.close()
            full.close()


def test_redis_down_answers_alike_and_fails_open(sites, people):
    from ledger_core.cache import balance_cache
    from ledger_site.authstate import auth_states
    from ledger_site.ratelimit import outage
    from tests.ledger_core.test_cache import dead_redis_caches

    def errors() -> float:
        return REGISTRY.get_sample_value("ledger_ratelimit_errors_total") or 0.0

    before = errors()
    try:
        with override_settings(CACHES=dead_redis_caches()):
            for n in range(3):
                # Rate limits fail open, users are read from PostgreSQL, and
                # balances from PostgreSQL: the same answers either way.
                fast, full = both(
                    sites,
                    people,
                    lambda s, n=n: (post(s, "CREDIT_SPEND", f"d{n}"), f"owner-{s}", {}),
                )
                assert fast[0] == 201
                assert_same(fast, full)
                fast, full = both(sites, people, read("owner", "owner-{side}"))
                assert json.loads(fast[2])["balance"] == 2 - n
                assert_same(fast, full)
        # Each of the twelve requests was let through once and counted once.
        assert errors() - before == 12
    finally:
        outage.reset()
        balance_cache.reset()
        auth_states.reset()
