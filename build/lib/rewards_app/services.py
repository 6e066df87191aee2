"""Rewards writes: the daily claim and referral bonuses, through ledger_core only.

Design decision: the once-per-day rule is the ledger's own unique limit key,
so concurrent claims give exactly one success. The once-per-referred rule is a
fact about the referral, so ``Referral.referred`` is unique and the referral row
and its REFERRAL_BONUS entry commit in one transaction.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from ledger_core.actors import Actor
from ledger_core.exceptions import Forbidden, InvalidEntry, LimitReached
from ledger_core.selectors import entry_list
from ledger_core.services import PostResult, entry_post

from .models import Referral
from .operations import RewardOperation

APP = "rewards"


def daily_claim(*, user: Any, actor: Actor, nonce: str | None = None) -> PostResult:
    """Claim today's DAILY_REWARD for ``user``; ``LimitReached`` if already claimed."""
    return entry_post(
        owner_id=user.get_username(),
        operation=RewardOperation.DAILY_REWARD,
        nonce=f"daily:{nonce}" if nonce is not None else f"daily:{uuid.uuid4().hex}",
        app=APP,
        actor=actor,
    )


@dataclasses.dataclass(frozen=True)
class ReferralResult:
    referral: Referral
    entry: Any
    replayed: bool = False


def _user(username: str, field: str) -> Any:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise InvalidEntry(f"{field} is not an existing user.", field=field)
    return user


def referral_create(
    *, referrer: str, referred: str, actor: Actor, nonce: str | None = None
) -> ReferralResult:
    """Pay REFERRAL_BONUS to ``referrer`` for ``referred``, at most once per referred user.

    A retry with the same nonce returns the original referral (``replayed``);
    any other second referral of the same user is ``LimitReached``.
    """
    if not (actor.can_post_any or actor.is_system):
        # Checked before the user look-ups so non-managers learn nothing about users.
        raise Forbidden("Only managers may award referral bonuses.")
    if referrer == referred:
        raise InvalidEntry("referrer and referred must be different users.", field="referred")
    referrer_user = _user(referrer, "referrer")
    referred_user = _user(referred, "referred")
    if referrer_user.pk == referred_user.pk:
        raise InvalidEntry("referrer and referred must be different users.", field="referred")
    try:
        with transaction.atomic():
            referral = Referral.objects.create(
                referrer=referrer_user,
                referred=referred_user,
                nonce=nonce,
                bonus_entry_id=0,
                created_by=actor.name,
            )
            result = entry_post(
                owner_id=referrer_user.get_username(),
                operation=RewardOperation.REFERRAL_BONUS,
                nonce=f"referral:{referred_user.pk}",
                app=APP,
                actor=actor,
                metadata={"referred": referred_user.get_username()},
            )
            referral.bonus_entry_id = result.entry.pk
            referral.save(update_fields=["bonus_entry_id"])
    except IntegrityError:
        existing = (
            Referral.objects.filter(referred=referred_user).select_related("referrer").first()
        )
        if existing is None:
            raise
        same_request = (
            nonce is not None
            and existing.nonce == nonce
            and existing.referrer_id == referrer_user.pk
        )
        if same_request:
            entry = entry_list(owner_id=referrer_user.get_username()).get(
                pk=existing.bonus_entry_id
            )
            return ReferralResult(referral=existing, entry=entry, replayed=True)
        raise LimitReached(
            f"{referred} has already been referred; the bonus is paid once per referred user."
        ) from None
    return ReferralResult(referral=referral, entry=result.entry)
