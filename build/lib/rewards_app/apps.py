from django.apps import AppConfig


class RewardsConfig(AppConfig):
    name = "rewards_app"
    label = "rewards"
    verbose_name = "Rewards"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ledger_core.operations import register

        from .operations import POLICIES, RewardOperation

        register(self.label, RewardOperation, policies=POLICIES)
