"""``manage.py createsuperuser`` checks usernames as registration does: a
name with a ledger, another user's name in another letter case, a reserved
name or one an owner id cannot hold is refused, from the command line, the
environment and the prompt (a real terminal, as an operator meets it)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import fund
from tests.factories import UserFactory
from tests.livehelpers import ROOT, site_env

User = get_user_model()
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("carol", "taken"),  # a ledger without a user: carol's credits
        ("ALICE", "taken"),  # alice in another letter case
        ("holds", "reserved"),
        ("jos\u00e9", "Use"),  # Django's own rule allows it; an owner id does not
        ("a b", "Use"),
    ],
)
def test_noinput_refuses_a_name_that_cannot_be_a_new_owner(username, message, monkeypatch):
    fund("carol", 5)
    UserFactory(username="alice")
    with pytest.raises(CommandError, match=message):
        call_command("createsuperuser", interactive=False, username=username,
                     email="root@example.com", verbosity=0)  # fmt: skip
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", username)
    with pytest.raises(CommandError, match=message):
        call_command("createsuperuser", interactive=False, email="root@example.com", verbosity=0)
    assert not User.objects.filter(is_superuser=True).exists()


def test_noinput_creates_a_free_name(monkeypatch):
    fund("carol", 5)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct-Horse-battery-9")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    call_command("createsuperuser", interactive=False, email="root@example.com", verbosity=0)
    root = User.objects.get(username="root")
    assert root.is_superuser and root.check_password("correct-Horse-battery-9")


class Terminal:
    """The operator's side of a pseudo-terminal running a command."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command on the terminal's other end
            try:
                os.chdir(ROOT)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        self.pending = self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> None:
        """Read until ``text`` appears, and consume what comes up to its end."""
        deadline = time.monotonic() + timeout
        while text not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.seen!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the terminal closed: the command ended
                    chunk = ""
                assert chunk, f"ended without {text!r}: {self.seen!r}"
                self.pending += chunk
                self.seen += chunk
        self.pending = self.pending.split(text, 1)[1]

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def close(self) -> int:
        """The command's exit code (it is killed if it has not ended)."""
        for _ in range(100):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, 9)
            _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


@pytest.mark.django_db(transaction=True)
def test_the_prompt_asks_again_for_a_name_with_a_ledger():
    fund("carol", 5)
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ledger")
    env = site_env(
        DATABASE_URL=base.rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
        DJANGO_SUPERUSER_USERNAME=None,
        DJANGO_SUPERUSER_PASSWORD=None,
    )
    terminal = Terminal(
        [sys.executable, "manage.py", "createsuperuser", "--email", "root@example.com"], env
    )
    try:
        terminal.expect("Username")
        terminal.type("carol")
        terminal.expect("Error: This username is taken.")
        terminal.expect("Username")  # asked again
        terminal.type("root")
        terminal.expect("Password:")
        terminal.type("correct-Horse-battery-9")
        terminal.expect("Password (again):")
        terminal.type("correct-Horse-battery-9")
        terminal.expect("Superuser created successfully.")
    finally:
        code = terminal.close()
    assert code == 0, terminal.seen
    assert list(User.objects.values_list("username", "is_superuser")) == [("root", True)]
