"""Django's ``createsuperuser``, with usernames checked like registration's.

A user's owner id is their username, so a superuser named like an existing
ledger would own its credits, one named like another user in another letter
case would fail at the database's unique index with a traceback, and one with
characters an owner id cannot hold would have a ledger nobody can address.
The name is checked by ``ledger_site.services.username_problem`` (the rule of
registration, the admin's add-user form and ``create_service_account``)
wherever it comes from: ``--username``, ``DJANGO_SUPERUSER_USERNAME`` or the
prompt. This command overrides Django's because ``ledger_site`` comes before
``django.contrib.auth`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.core.management.base import CommandError

from ledger_site.services import username_problem


def _problem(username: str) -> str | None:
    """Why ``username`` cannot be a new user's, or None."""
    problem = username_problem(username)
    return None if problem is None else problem[1]


class Command(createsuperuser.Command):
    help = createsuperuser.Command.help + " The username must be free to be a ledger owner id."

    def handle(self, *args: Any, **options: Any) -> None:
        given = options.get(self.UserModel.USERNAME_FIELD)
        if not given and not options["interactive"]:
            given = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        if given and (problem := _problem(given)):
            raise CommandError(problem)
        super().handle(*args, **options)

    def get_input_data(self, field: Any, message: str, default: str | None = None) -> Any:
        """Django's prompt; a username that cannot be an owner's is asked again."""
        value = super().get_input_data(field, message, default)
        if field is self.username_field and value and (problem := _problem(value)):
            self.stderr.write(f"Error: {problem}")
            return None
        return value
