"""Create a user for another service to call the ledger API as a manager."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from ledger_core.selectors import ledger_exists
from ledger_core.validation import is_valid_owner_id


class Command(BaseCommand):
    help = (
        "Create a service account with ledger_core.post_any_entry and print its "
        "password once, with how to obtain tokens."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="username of the service account")
        parser.add_argument(
            "--view-only",
            action="store_true",
            help="grant ledger_core.view_any_ledger (auditor) instead of post_any_entry",
        )
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="the account exists: set a new password (and the permission)",
        )

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        if not is_valid_owner_id(name) or ":" in name:
            raise CommandError("NAME must be 1-128 characters of A-Z a-z 0-9 _ . @ + -")
        codename = "view_any_ledger" if options["view_only"] else "post_any_entry"
        permission = Permission.objects.get(
            content_type__app_label="ledger_core", codename=codename
        )
        password = secrets.token_urlsafe(32)
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username__iexact=name).first()
            if user is not None and not options["reset_password"]:
                raise CommandError(
                    f"user {user.get_username()!r} exists; use --reset-password to rotate it"
                )
            if user is None:
                if ledger_exists(owner_id=name):
                    # A user's owner id is their username: the account would own
                    # (and, as any owner may, spend) that ledger's credits.
                    raise CommandError(
                        f"{name!r} already has a ledger (a deleted account's, or an owner id "
                        "credited directly); a service account of that name would own its "
                        "credits: choose another name"
                    )
                user = User.objects.create_user(username=name, password=password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            user.user_permissions.add(permission)
        self.stdout.write(f"service account {user.get_username()!r} has ledger_core.{codename}")
        self.stdout.write(f"password (shown once, store it in your secret manager): {password}")
        self.stdout.write("obtain tokens with:")
        self.stdout.write(
            "  curl -X POST https://<host>/api/auth/token/ -H 'Content-Type: application/json' "
            f"""-d '{{"username": "{user.get_username()}", "password": "<password>"}}'"""
        )
        self.stdout.write(
            "then send 'Authorization: Bearer <access>'; renew with POST /api/auth/token/refresh/"
        )
