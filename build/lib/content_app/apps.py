from django.apps import AppConfig


class ContentConfig(AppConfig):
    name = "content_app"
    label = "content"
    verbose_name = "Content"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ledger_core.operations import register

        from .operations import POLICIES, ContentOperation

        register(self.label, ContentOperation, policies=POLICIES)
