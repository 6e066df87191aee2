"""Delete what authentication leaves behind once it can no longer matter.

Every login and every refresh adds a row to simplejwt's outstanding-token
list (and a rotated refresh token one to its blacklist), every browser login
a Django session, every logout a ``RevokedSession``; none of them is removed
by the requests themselves. Once a refresh token has expired, neither it nor
its blacklist entry can change an answer; once a session has expired, nor can
it; a revoked session is kept until every token that carries it has expired
(``ledger_site.services.session_kept_for``). This command deletes those rows:
expired tokens as simplejwt's ``flushexpiredtokens`` does (their blacklist
entries go with them), sessions through Django's ``clearsessions``.
Idempotent, safe to run from several places at once, and nothing on the
ledger depends on it.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from ledger_core.management.workers import add_worker_arguments, run
from ledger_site.services import revoked_sessions_prune


class Command(BaseCommand):
    help = (
        "Delete expired refresh tokens (and their blacklist entries), expired sessions "
        "and forgotten logouts; idempotent, safe concurrently."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_worker_arguments(
            parser,
            loop_help="keep running, pruning every SECONDS (a long-running worker)",
            metrics=False,
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run(options["loop"], self.prune, name="the auth pruner")

    def prune(self) -> bool:
        """One pass; there is never more waiting than one pass removes."""
        _, deleted = OutstandingToken.objects.filter(expires_at__lte=timezone.now()).delete()
        call_command("clearsessions")
        sessions = revoked_sessions_prune()
        self.stdout.write(
            f"{deleted.get(OutstandingToken._meta.label, 0)} expired refresh tokens "
            f"({deleted.get(BlacklistedToken._meta.label, 0)} of them blacklisted) and "
            f"{sessions} forgotten logouts deleted; expired sessions cleared"
        )
        return False
