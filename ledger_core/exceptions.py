"""The ledger's error hierarchy.

Every refusal a service can make is a ``LedgerError`` subclass with a machine
``code`` and an HTTP ``status``; the API's one exception handler
(``ledger_core.api.exceptions``) turns them into ``{"code", "detail", ...}``.
Services raise them before or instead of writing, so a refused post stores
nothing.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Base of every ledger refusal."""

    code = "ledger_error"
    status = 400
    default_detail = "The ledger refused the request."

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.default_detail
        self.extra = extra
        super().__init__(self.detail)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class InvalidEntry(LedgerError):
    """The request is malformed: bad owner id, nonce, amount or metadata.

    With a ``field``, the body also has ``errors: {field: [detail]}``, the
    shape input validation uses for field errors.
    """

    code = "invalid"
    status = 400
    default_detail = "Invalid input."

    def as_dict(self) -> dict[str, Any]:
        body = super().as_dict()
        field = self.extra.get("field")
        if field and "errors" not in body:
            body["errors"] = {field: [self.detail]}
        return body


class UnknownOperation(InvalidEntry):
    """The operation is not one this app may post; ``allowed`` lists those it may."""

    default_detail = "Unknown operation for this app."

    def as_dict(self) -> dict[str, Any]:
        return LedgerError.as_dict(self)


class CursorAhead(InvalidEntry):
    """An event feed cursor past every transaction this database has run: it
    was not handed out here, or the database was restored to an earlier state
    (or loaded from a logical dump) after it was. Reading on from it would
    wait for ever, or skip events."""

    default_detail = (
        "This cursor is ahead of the event feed: it was not handed out by this database, "
        "or the database was restored since. Start again from a cursor the feed gives."
    )

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, field="after", **extra)


class Forbidden(LedgerError):
    """The actor may not post this operation to this owner's ledger (or read it)."""

    code = "forbidden"
    status = 403
    default_detail = "You do not have permission to perform this action."


class InsufficientBalance(LedgerError):
    """A debit (or hold) larger than the owner's available credits (balance
    minus held); carries ``balance``, ``available`` and ``required``."""

    code = "insufficient_balance"
    status = 409
    default_detail = "Insufficient balance."


class NonceConflict(LedgerError):
    """The nonce was already used by this owner for a different payload."""

    code = "nonce_conflict"
    status = 409
    default_detail = "This nonce was already used with a different payload."


class NonceInFlight(LedgerError):
    """A post with the same nonce is still in progress; retry shortly."""

    code = "nonce_in_flight"
    status = 409
    default_detail = "A request with this nonce is still in progress; retry."


class OutcomeUnknown(LedgerError):
    """The database connection failed while the write was being stored: it may
    or may not have committed. Retry with the same nonce: if it was stored, the
    retry answers as a replay (200); if not, it is stored then."""

    code = "outcome_unknown"
    status = 503
    default_detail = (
        "The ledger lost its database connection while storing this request; it may or "
        "may not have been stored. Retry with the same nonce."
    )


class EntryNotFound(LedgerError):
    """No entry with this id was posted by this app."""

    code = "not_found"
    status = 404
    default_detail = "No such entry in this app."


class NotReversible(LedgerError):
    """The entry cannot be reversed: it is a reversal itself, or moved no credits."""

    code = "not_reversible"
    status = 400
    default_detail = "This entry cannot be reversed."


class AlreadyReversed(LedgerError):
    """The entry has been reversed already; ``reversal_id`` names the reversal."""

    code = "already_reversed"
    status = 409
    default_detail = "This entry has already been reversed."


class HoldNotFound(LedgerError):
    """No hold with this id was placed by this app."""

    code = "not_found"
    status = 404
    default_detail = "No such hold in this app."


class SubscriptionNotFound(LedgerError):
    """No webhook subscription with this id."""

    code = "not_found"
    status = 404
    default_detail = "No such webhook subscription."


class HoldNotPending(LedgerError):
    """The hold was resolved otherwise (captured, voided, or captured for
    another amount); carries its ``status``."""

    code = "hold_not_pending"
    status = 409
    default_detail = "This hold is no longer pending."


class HoldExpired(LedgerError):
    """The hold expired before it was captured; its credits are free again."""

    code = "hold_expired"
    status = 409
    default_detail = "This hold has expired; its credits were released."


class LimitReached(LedgerError):
    """The operation's limit (once per day, once per owner, ...) is used up."""

    code = "limit_reached"
    status = 409
    default_detail = "The limit for this operation has been reached."


class BatchRefused(LedgerError):
    """An atomic batch stored nothing because the entry at ``index`` was refused.

    Its ``code``, ``status`` and extra fields are those of that entry's refusal.
    """

    def __init__(self, index: int, error: LedgerError) -> None:
        self.index = index
        self.error = error
        self.code = error.code
        self.status = error.status
        super().__init__(
            f"Entry {index} was refused ({error.code}): {error.detail} Nothing was stored.",
            index=index,
            **error.extra,
        )
