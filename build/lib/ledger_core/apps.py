from django.apps import AppConfig


class LedgerCoreConfig(AppConfig):
    name = "ledger_core"
    verbose_name = "Ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
