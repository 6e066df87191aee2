"""Password reset by mail: a link that works once, for a while, for its own
account; the same answer for every address; tokens issued before stop working."""

from __future__ import annotations

import base64
import contextlib
import re
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from django.core import mail
from django.core.checks import run_checks
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from ledger_site.models import VerifiedEmail
from tests.factories import PASSWORD, UserFactory
from tests.livehelpers import (
    call,
    free_port,
    gunicorn_cmd,
    gunicorn_env,
    manage,
    running_server,
    site_env,
    temp_database,
)

RESET, CONFIRM = "/api/auth/password/reset/", "/api/auth/password/reset/confirm/"
VERIFY = "/api/auth/email/verify/"
NEW_PASSWORD = "a-New-Horse-battery-9"
ANSWER = "If an active account has this email address, a password reset link is on its way to it."

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mail_on(settings):
    # The suite runs as production does (debug off), where a reset needs
    # EMAIL_URL; Django's test runner keeps sent mail in mail.outbox.
    settings.EMAIL_ENABLED = True


def account(**fields):
    """A user whose address is verified (a verification link came back)."""
    user = UserFactory(**fields)
    VerifiedEmail.objects.create(user=user, email=user.email)
    return user


def token_of(message: str) -> str:
    """The token a verification mail gives."""
    found = re.search(r'"token": "([^"]+)"', message)
    assert found, message
    return found.group(1)


def link_of(message: str) -> tuple[str, str]:
    """The uid and token a reset mail gives."""
    found = re.search(r'"uid": "([^"]+)", "token": "([^"]+)"', message)
    assert found, message
    return found.group(1), found.group(2)


def login(client: APIClient, password: str):
    return client.post("/api/auth/token/", {"username": "alice", "password": password},
                       format="json")  # fmt: skip


def test_a_reset_link_sets_a_new_password_once_and_ends_older_tokens(api_client):
    account(username="alice", email="alice@example.test")
    before = login(api_client, PASSWORD).json()
    response = api_client.post(RESET, {"email": "Alice@Example.TEST"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json() == {"detail": ANSWER}
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["alice@example.test"] and "alice" in sent.subject
    assert "POST http://testserver/api/auth/password/reset/confirm/" in sent.body
    assert "works once, for 60 minutes" in sent.body
    uid, token = link_of(sent.body)
    # The new password meets the same rules as at registration.
    weak = api_client.post(CONFIRM, {"uid": uid, "token": token, "new_password": "alice"},
                           format="json")  # fmt: skip
    assert weak.status_code == 400 and "new_password" in weak.json()["errors"]
    done = api_client.post(CONFIRM, {"uid": uid, "token": token, "new_password": NEW_PASSWORD},
                           format="json")  # fmt: skip
    assert done.status_code == 204, done.content
    assert login(api_client, NEW_PASSWORD).status_code == 200
    assert login(api_client, PASSWORD).status_code == 401
    # What was issued before the reset no longer refreshes or writes.
    refreshed = api_client.post("/api/auth/token/refresh/", {"refresh": before["refresh"]},
                                format="json")  # fmt: skip
    assert refreshed.status_code == 401
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Bearer {before['access']}")
    change = {"old_password": NEW_PASSWORD, "new_password": "yet-Another-horse-3"}
    assert old.post("/api/auth/password/", change, format="json").status_code == 401
    # The link worked once.
    body = {"uid": uid, "token": token, "new_password": "x-Other-horse-5"}
    again = api_client.post(CONFIRM, body, format="json")
    assert again.status_code == 400 and again.json()["code"] == "invalid"
    assert "token" in again.json()["errors"]
    assert login(api_client, NEW_PASSWORD).status_code == 200


def test_every_address_gets_the_same_answer_and_only_active_accounts_get_mail(api_client):
    account(username="inactive", email="gone@example.test", is_active=False)
    no_password = account(username="sso", email="sso@example.test")
    no_password.set_unusable_password()
    no_password.save()
    account(username="twin1", email="twins@example.test")
    account(username="twin2", email="TWINS@example.test")
    answers = {
        address: api_client.post(RESET, {"email": address}, format="json")
        for address in (
            "nobody@example.test",
            "gone@example.test",
            "sso@example.test",
            "twins@example.test",
        )  # fmt: skip
    }
    assert {(r.status_code, r.json()["detail"]) for r in answers.values()} == {(202, ANSWER)}
    # Each account with the address gets its own link; the others none.
    assert sorted(m.subject for m in mail.outbox) == [
        "Reset the password of twin1", "Reset the password of twin2",
    ]  # fmt: skip


def test_the_mail_links_to_the_sites_own_reset_page_when_it_has_one(api_client, settings):
    settings.PASSWORD_RESET_URL = "https://app.example.test/reset?u={uid}&t={token}"
    user = account(username="alice", email="alice@example.test")
    api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    found = re.search(r"https://app\.example\.test/reset\?u=(\S+)&t=(\S+)", mail.outbox[0].body)
    assert found, mail.outbox[0].body
    assert base64.urlsafe_b64decode(found.group(1) + "==").decode() == str(user.pk)
    done = api_client.post(CONFIRM, {"uid": found.group(1), "token": found.group(2),
                                     "new_password": NEW_PASSWORD}, format="json")  # fmt: skip
    assert done.status_code == 204


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("uid", "token"),
    [("!!!", "x"), (encoded("abc"), "x"), (encoded("9" * 40), "x"), (encoded("99999"), "x"),
     ("", ""), (None, None)],
)  # fmt: skip
def test_a_link_that_is_not_one_is_a_400(api_client, uid, token):
    account(username="alice", email="alice@example.test")
    body = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    response = api_client.post(CONFIRM, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert login(api_client, PASSWORD).status_code == 200


def test_a_link_for_one_account_does_not_open_another(api_client):
    account(username="alice", email="alice@example.test")
    bob = account(username="bob", email="bob@example.test")
    api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    _, token = link_of(mail.outbox[0].body)
    body = {"uid": encoded(str(bob.pk)), "token": token, "new_password": NEW_PASSWORD}
    assert api_client.post(CONFIRM, body, format="json").status_code == 400
    bob.refresh_from_db()
    assert bob.check_password(PASSWORD)


def test_an_expired_link_is_a_400(api_client, settings):
    account(username="alice", email="alice@example.test")
    api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    uid, token = link_of(mail.outbox[0].body)
    settings.PASSWORD_RESET_TIMEOUT = -1  # every link is older than that
    body = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    response = api_client.post(CONFIRM, body, format="json")
    assert response.status_code == 400 and "expired" in response.json()["errors"]["token"][0]


def test_a_deactivated_accounts_link_stops_working(api_client):
    user = account(username="alice", email="alice@example.test")
    api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    uid, token = link_of(mail.outbox[0].body)
    user.is_active = False
    user.save()
    body = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    assert api_client.post(CONFIRM, body, format="json").status_code == 400


@pytest.mark.parametrize("body", [{}, {"email": "not an address"}, {"email": ["a@b.test"]}])
def test_a_bad_reset_request_is_a_400(api_client, body):
    response = api_client.post(RESET, body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("page", "problems"),
    [("", []), ("https://app.example.test/r?u={uid}&t={token}", []),
     ("https://app.example.test/reset", ["site.E001"]),
     ("https://app.example.test/r/{token}", ["site.E001"])],
)  # fmt: skip
def test_a_reset_page_without_the_uid_and_token_fails_the_system_check(settings, page, problems):
    settings.PASSWORD_RESET_URL = page
    assert [problem.id for problem in run_checks() if problem.id.startswith("site.")] == problems
    settings.PASSWORD_RESET_URL, settings.EMAIL_VERIFY_URL = "", page.replace("{uid}", "")
    expected = [] if not page or "{token}" in page else ["site.E002"]
    assert [problem.id for problem in run_checks() if problem.id.startswith("site.")] == expected


def test_without_mail_a_reset_request_says_so(api_client, settings):
    settings.EMAIL_ENABLED = False
    account(username="alice", email="alice@example.test")
    response = api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "not_configured" and "Retry-After" not in response
    assert mail.outbox == []


def test_reset_requests_are_limited_per_address_across_clients(api_client, settings):
    settings.RATE_LIMIT_AUTH = "2/m"
    account(username="alice", email="alice@example.test")
    for i in range(2):
        response = api_client.post(RESET, {"email": "alice@example.test"}, format="json",
                                   REMOTE_ADDR=f"10.0.0.{i + 1}")  # fmt: skip
        assert response.status_code == 202
    flood = api_client.post(RESET, {"email": "ALICE@example.test"}, format="json",
                            REMOTE_ADDR="10.0.0.99")  # fmt: skip
    assert flood.status_code == 429
    assert len(mail.outbox) == 2


def test_a_mail_server_that_refuses_is_logged_and_the_answer_is_the_same(api_client, settings):
    # Django's SMTP backend against a closed port on this machine.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    account(username="alice", email="alice@example.test")
    failures = REGISTRY.get_sample_value("ledger_mail_failures_total")
    response = api_client.post(RESET, {"email": "alice@example.test"}, format="json")
    assert (response.status_code, response.json()) == (202, {"detail": ANSWER})
    # Counted, for the LedgerMailFailing alert.
    assert REGISTRY.get_sample_value("ledger_mail_failures_total") == failures + 1


def test_the_address_links_go_to_changes_with_the_password(api_client):
    user = account(username="alice", email="alice@old.example.test")
    api_client.post(RESET, {"email": "alice@old.example.test"}, format="json")
    old_uid, old_token = link_of(mail.outbox[0].body)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login(api_client, PASSWORD).json()['access']}")
    # A stolen access token alone cannot redirect the links.
    wrong = client.post("/api/auth/email/", {"password": "guess", "email": "thief@example.test"},
                        format="json")  # fmt: skip
    assert wrong.status_code == 400 and "password" in wrong.json()["errors"]
    for bad in ({"password": PASSWORD, "email": "not an address"}, {"email": "a@b.test"}):
        assert client.post("/api/auth/email/", bad, format="json").status_code == 400
    assert APIClient().post("/api/auth/email/", {"password": PASSWORD, "email": "x@y.test"},
                            format="json").status_code == 401  # fmt: skip
    user.refresh_from_db()
    assert user.email == "alice@old.example.test"
    changed = client.post("/api/auth/email/", {"password": PASSWORD,
                          "email": "alice@new.example.test"}, format="json")  # fmt: skip
    assert changed.status_code == 200
    assert changed.json() == {"email": "alice@new.example.test", "email_verified": False,
                              "verification_sent": True}  # fmt: skip
    me = client.get("/api/auth/me/").json()
    assert (me["email"], me["email_verified"]) == ("alice@new.example.test", False)
    verification = mail.outbox[1]
    assert verification.to == ["alice@new.example.test"]
    # The link mailed to the old address no longer works, and the new address
    # gets none until it is verified.
    body = {"uid": old_uid, "token": old_token, "new_password": NEW_PASSWORD}
    assert api_client.post(CONFIRM, body, format="json").status_code == 400
    for address in ("alice@old.example.test", "alice@new.example.test"):
        api_client.post(RESET, {"email": address}, format="json")
    assert len(mail.outbox) == 2
    verified = api_client.post(VERIFY, {"token": token_of(verification.body)}, format="json")
    assert verified.status_code == 200, verified.content
    assert verified.json() == {"username": "alice", "email": "alice@new.example.test",
                               "email_verified": True}  # fmt: skip
    assert client.get("/api/auth/me/").json()["email_verified"] is True
    api_client.post(RESET, {"email": "alice@new.example.test"}, format="json")
    assert mail.outbox[2].to == ["alice@new.example.test"] and "Reset" in mail.outbox[2].subject
    # An empty address: no links at all.
    cleared = client.post("/api/auth/email/", {"password": PASSWORD, "email": ""}, format="json")
    assert cleared.json() == {"email": "", "email_verified": False, "verification_sent": False}
    api_client.post(RESET, {"email": "alice@new.example.test"}, format="json")
    assert len(mail.outbox) == 3


def test_an_address_gets_reset_links_only_once_verified(api_client):
    registered = api_client.post("/api/auth/register/", {"username": "dora", "password": PASSWORD,
                                 "email": "Dora@Example.TEST"}, format="json")  # fmt: skip
    assert registered.status_code == 201, registered.content
    assert [m.to for m in mail.outbox] == [["Dora@example.test"]]  # the verification link
    token = token_of(mail.outbox[0].body)
    assert "POST http://testserver/api/auth/email/verify/" in mail.outbox[0].body
    # Unverified (a typo would hand the account to a stranger): no reset link.
    assert api_client.post(RESET, {"email": "dora@example.test"}, format="json").status_code == 202
    assert len(mail.outbox) == 1
    # A token that is not one, or for another address, verifies nothing.
    for bad in (token + "x", "garbage", token.replace(token[:4], "AAAA")):
        response = api_client.post(VERIFY, {"token": bad}, format="json")
        assert response.status_code == 400 and "token" in response.json()["errors"], bad
    assert api_client.post(VERIFY, {"token": token}, format="json").status_code == 200
    assert api_client.post(VERIFY, {"token": token}, format="json").status_code == 200  # again
    api_client.post(RESET, {"email": "dora@example.test"}, format="json")
    assert mail.outbox[1].subject == "Reset the password of dora"


def test_an_expired_verification_link_is_a_400(api_client, settings):
    user = UserFactory(username="erin", email="erin@example.test")
    api_client.force_authenticate(user)
    api_client.post("/api/auth/email/", {"password": PASSWORD, "email": "erin@example.test"},
                    format="json")  # fmt: skip
    token = token_of(mail.outbox[0].body)  # setting the same address again sends a new link
    settings.EMAIL_VERIFY_TIMEOUT = -1
    response = APIClient().post(VERIFY, {"token": token}, format="json")
    assert response.status_code == 400 and "expired" in response.json()["errors"]["token"][0]
    assert not VerifiedEmail.objects.exists()


def test_a_verification_page_gets_the_token(api_client, settings):
    settings.EMAIL_VERIFY_URL = "https://app.example.test/verify?t={token}"
    api_client.post("/api/auth/register/", {"username": "finn", "password": PASSWORD,
                    "email": "finn@example.test"}, format="json")  # fmt: skip
    found = re.search(r"https://app\.example\.test/verify\?t=(\S+)", mail.outbox[0].body)
    assert found, mail.outbox[0].body
    assert api_client.post(VERIFY, {"token": found.group(1)}, format="json").status_code == 200


def test_a_mail_server_that_never_answers_holds_the_request_only_for_email_timeout(
    api_client, settings
):
    # A server on this machine that accepts connections and says nothing (a
    # hung mail relay): the SMTP client gives up after EMAIL_TIMEOUT.
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as silent:
        silent.socket.listen()
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.server_address[1]
        settings.EMAIL_TIMEOUT = 1
        account(username="alice", email="alice@example.test")
        failures = REGISTRY.get_sample_value("ledger_mail_failures_total")
        started = time.monotonic()
        response = api_client.post(RESET, {"email": "alice@example.test"}, format="json")
        waited = time.monotonic() - started
    assert (response.status_code, response.json()) == (202, {"detail": ANSWER})
    assert REGISTRY.get_sample_value("ledger_mail_failures_total") == failures + 1
    assert waited < 20, waited  # bounded by the timeout, not by the silent server


@pytest.mark.slow
def test_the_mail_servers_password_never_shows_on_a_debug_page():
    # Django's debug pages show the settings through this filter, which hides
    # names like *PASSWORD*; the URL the password came in is not kept.
    env = site_env(EMAIL_URL="smtp+tls://ledger:s3cret-pw@smtp.example.test:587",
                   DJANGO_DEBUG="1", DATABASE_URL="postgres://127.0.0.1:1/none")  # fmt: skip
    script = (
        "from django.conf import settings; "
        "from django.views.debug import SafeExceptionReporterFilter as F; "
        "print(settings.EMAIL_HOST_PASSWORD, settings.EMAIL_USE_TLS, settings.EMAIL_ENABLED); "
        "print(repr(F().get_safe_settings()))"
    )
    shown = manage(env, "shell", "-c", script).stdout.splitlines()[-2:]
    assert shown[0] == "s3cret-pw True True"
    assert "s3cret-pw" not in shown[1] and "EMAIL_HOST" in shown[1]


# --- a real server sending through a real SMTP server -------------------------------


class SMTPSink(socketserver.StreamRequestHandler):
    """The least of SMTP (RFC 5321) a client needs to hand over a message."""

    def handle(self) -> None:
        self.wfile.write(b"220 sink ready\r\n")
        while line := self.rfile.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data)
                self.server.messages.append(b"".join(lines).decode())  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # EHLO, MAIL, RCPT, RSET, NOOP
                self.wfile.write(b"250 ok\r\n")


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[int, list[str]]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPSink)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], server.messages  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_reset_through_gunicorn_and_an_smtp_server(tmp_path):
    port = free_port()
    with smtp_sink() as (smtp_port, messages), temp_database() as database_url:
        env = gunicorn_env(tmp_path, DATABASE_URL=database_url,
                           EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
                           DEFAULT_FROM_EMAIL="ledger@example.test")  # fmt: skip
        manage(env, "migrate", "--noinput")
        with running_server(gunicorn_cmd(port, 1), env, f"http://127.0.0.1:{port}/healthz"):
            base = f"http://127.0.0.1:{port}/api/auth"
            carol = {"username": "carol", "password": PASSWORD, "email": "carol@example.test"}
            assert call("POST", f"{base}/register/", carol)[0] == 201
            # Registration mailed a verification link; the address is confirmed with it.
            assert len(messages) == 1, messages
            assert "From: ledger@example.test" in messages[0]
            assert "To: carol@example.test" in messages[0]
            verify = {"token": token_of(messages[0])}
            assert call("POST", f"{base}/email/verify/", verify)[0] == 200
            status, body, _ = call("POST", f"{base}/password/reset/", {"email": carol["email"]})
            assert (status, body) == (202, {"detail": ANSWER})
            assert len(messages) == 2, messages
            uid, token = link_of(messages[1])
            confirm = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
            assert call("POST", f"{base}/password/reset/confirm/", confirm)[0] == 204
            status, body, _ = call("POST", f"{base}/token/",
                                   {"username": "carol", "password": NEW_PASSWORD})  # fmt: skip
            assert status == 200 and body["access"]
