from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The site itself as a ledger app: it posts SIGNUP_CREDIT on registration."""

    name = "ledger_site"
    label = "site"
    verbose_name = "Site"

    def ready(self) -> None:
        from ledger_core.operations import register

        from . import checks, schema  # noqa: F401  (registers the system checks, the OpenAPI auth extension)
        from .operations import SiteOperation

        register(self.label, SiteOperation)
