from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The site itself as a ledger app: it posts SIGNUP_CREDIT on registration."""

    name = "ledger_site"
    label = "site"
    verbose_name = "Site"

    def ready(self) -> None:
        from ledger_core.operations import register

        from .operations import SiteOperation

        register(self.label, SiteOperation)
