"""The site's writes: registration, which opens the new owner's ledger."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from ledger_core.actors import Actor
from ledger_core.services import entry_post

SIGNUP_NONCE = "signup"
SITE_APP = "site"


def user_register(*, username: str, password: str, email: str = "") -> Any:
    """Create a user and post their SIGNUP_CREDIT in one transaction."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(
            username=username, password=password, email=email or ""
        )
        entry_post(
            owner_id=username,
            operation="SIGNUP_CREDIT",
            nonce=SIGNUP_NONCE,
            app=SITE_APP,
            actor=Actor.system("system:register"),
        )
    return user
