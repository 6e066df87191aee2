"""Content writes: an item and its payment commit together, or neither does.

Design decision: the item row is inserted first and the CONTENT_CREATION entry
is posted inside the same ``transaction.atomic()``; any refusal from the ledger
(or any later failure) rolls both back. A client nonce makes creation
idempotent: the item's own unique (owner, nonce) key decides which concurrent
request wins, and the ledger nonce is derived from it so the payment is
idempotent too.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from django.db import IntegrityError, transaction

from ledger_core.actors import Actor
from ledger_core.exceptions import NonceConflict
from ledger_core.services import PostResult, entry_post

from .models import ContentItem
from .operations import ContentOperation

APP = "content"


@dataclasses.dataclass(frozen=True)
class ItemResult:
    item: ContentItem
    replayed: bool = False


@dataclasses.dataclass(frozen=True)
class AccessResult:
    item: ContentItem
    entry: Any
    replayed: bool = False


def _replay(existing: ContentItem, title: str, body: str) -> ItemResult:
    if existing.title != title or existing.body != body:
        raise NonceConflict("This nonce was already used to create a different item.")
    return ItemResult(item=existing, replayed=True)


def item_create(
    *, owner: Any, title: str, body: str, actor: Actor, nonce: str | None = None
) -> ItemResult:
    """Create an item owned by ``owner`` and charge its CONTENT_CREATION in one commit.

    With ``nonce``, a retry returns the original item (``replayed=True``); the
    same nonce with another title or body is a ``NonceConflict``.
    """
    if nonce is not None:
        existing = ContentItem.objects.filter(owner=owner, nonce=nonce).first()
        if existing is not None:
            return _replay(existing, title, body)
    ledger_nonce = f"item:{nonce}" if nonce is not None else f"item:{uuid.uuid4().hex}"
    try:
        with transaction.atomic():
            item = ContentItem(owner=owner, title=title, body=body, nonce=nonce, payment_entry_id=0)
            item.save()
            result = entry_post(
                owner_id=owner.get_username(),
                operation=ContentOperation.CONTENT_CREATION,
                nonce=ledger_nonce,
                app=APP,
                actor=actor,
                metadata={"item_id": item.pk},
            )
            item.payment_entry_id = result.entry.pk
            item.save(update_fields=["payment_entry_id"])
    except IntegrityError:
        # A concurrent request with the same nonce created the item first.
        existing = ContentItem.objects.filter(owner=owner, nonce=nonce).first() if nonce else None
        if existing is None:
            raise
        return _replay(existing, title, body)
    return ItemResult(item=item)


def item_access(
    *, item: ContentItem, user: Any, actor: Actor, nonce: str | None = None
) -> AccessResult:
    """Record a CONTENT_ACCESS (0 credits) entry for ``user`` reading ``item``."""
    key = nonce if nonce is not None else uuid.uuid4().hex
    result: PostResult = entry_post(
        owner_id=user.get_username(),
        operation=ContentOperation.CONTENT_ACCESS,
        nonce=f"access:{item.pk}:{key}",
        app=APP,
        actor=actor,
        metadata={"item_id": item.pk},
    )
    return AccessResult(item=item, entry=result.entry, replayed=result.replayed)
