"""LedgerOperation subclasses, the registry, and the ledger_core system checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from content_app.operations import ContentOperation
from ledger_core.operations import (
    LedgerOperation,
    OperationClassError,
    OperationPolicy,
    parse_lifetime,
    registry,
)
from rewards_app.operations import RewardOperation


def test_base_has_no_members():
    assert list(LedgerOperation) == []


def test_class_missing_shared_operations_fails_naming_them():
    with pytest.raises(TypeError) as info:

        class BadOperation(LedgerOperation):
            CONTENT_CREATION = "CONTENT_CREATION"
            CREDIT_ADD = "CREDIT_ADD"

    message = str(info.value)
    for name in ("DAILY_REWARD", "SIGNUP_CREDIT", "CREDIT_SPEND"):
        assert name in message
    assert "CREDIT_ADD" not in message.split("missing:")[1]
    assert isinstance(info.value, ImproperlyConfigured)


def test_shared_operation_with_other_value_fails():
    with pytest.raises(OperationClassError, match="CREDIT_ADD"):

        class Renamed(LedgerOperation):
            DAILY_REWARD = "DAILY_REWARD"
            SIGNUP_CREDIT = "SIGNUP_CREDIT"
            CREDIT_SPEND = "CREDIT_SPEND"
            CREDIT_ADD = "ADD"


def test_good_class_works_as_choices():
    class GoodOperation(LedgerOperation):
        DAILY_REWARD = "DAILY_REWARD"
        SIGNUP_CREDIT = "SIGNUP_CREDIT"
        CREDIT_SPEND = "CREDIT_SPEND"
        CREDIT_ADD = "CREDIT_ADD"
        CONTENT_CREATION = "CONTENT_CREATION"

    assert GoodOperation.CONTENT_CREATION == "CONTENT_CREATION"
    assert ("CREDIT_ADD", "Credit Add") in GoodOperation.choices


def test_consumer_apps_are_registered():
    assert (
        set(registry.operations_for("content"))
        == {
            *ContentOperation.values,
        }
        >= {"CONTENT_CREATION", "CONTENT_ACCESS", "DAILY_REWARD"}
    )
    assert "REFERRAL_BONUS" in registry.operations_for("rewards")
    assert "REFERRAL_BONUS" not in registry.operations_for("content")
    assert registry.policy("rewards", RewardOperation.REFERRAL_BONUS).amount == 5


def test_default_amounts_match_design():
    expected = {
        ("content", "DAILY_REWARD"): 1,
        ("content", "SIGNUP_CREDIT"): 3,
        ("content", "CREDIT_SPEND"): -1,
        ("content", "CREDIT_ADD"): 10,
        ("content", "CONTENT_CREATION"): -5,
        ("content", "CONTENT_ACCESS"): 0,
        ("rewards", "REFERRAL_BONUS"): 5,
    }
    for (app, op), amount in expected.items():
        assert registry.policy(app, op).amount == amount


def test_registering_a_non_operation_class_fails():
    with pytest.raises(OperationClassError):
        registry.register("broken", dict)  # type: ignore[arg-type]
    with pytest.raises(OperationClassError):
        registry.register("broken", LedgerOperation)


def test_registering_an_app_twice_with_another_class_fails():
    with pytest.raises(ImproperlyConfigured):
        registry.register("content", RewardOperation)


def ledger_check_ids() -> set[str]:
    return {m.id for m in run_checks() if m.id and m.id.startswith("ledger_core.")}


@pytest.fixture
def temp_app():
    labels = []

    def make(label, cls, policies=None):
        registry.register(label, cls, policies)
        labels.append(label)

    yield make
    for label in labels:
        registry.unregister(label)


def _full_class(name: str, **extra: str):
    members = {op: op for op in ("DAILY_REWARD", "SIGNUP_CREDIT", "CREDIT_SPEND", "CREDIT_ADD")}
    members.update(extra)
    return LedgerOperation(name, list(members.items()))


def test_project_passes_checks():
    assert ledger_check_ids() == set()


def test_check_reports_a_viewset_of_an_unregistered_operation_class(temp_app):
    from ledger_core.api import LedgerViewSet

    unregistered = _full_class("LooseOperation")

    class LooseViewSet(LedgerViewSet):
        operations = unregistered

    try:
        assert "ledger_core.E009" in ledger_check_ids()
        temp_app("loose", unregistered)
        assert "ledger_core.E009" not in ledger_check_ids()
    finally:
        del LooseViewSet
        import gc

        gc.collect()  # __subclasses__ holds weak references
    assert "ledger_core.E009" not in ledger_check_ids()


def test_check_refuses_a_database_other_than_postgresql(settings):
    from django.db import connections
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler({
        **settings.DATABASES,
        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    })  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.db.connections", handler)
        from ledger_core.checks import check_database_vendor

        errors = check_database_vendor()
    assert [(e.id, "sqlite" in e.msg) for e in errors] == [("ledger_core.E008", True)]
    assert check_database_vendor() == [] and connections["default"].vendor == "postgresql"


def test_ledger_settings_follow_override_settings():
    from ledger_core.conf import ledger_settings

    assert ledger_settings.MAX_ENTRY_AMOUNT == 1_000_000
    with override_settings(LEDGER_MAX_ENTRY_AMOUNT=5):
        assert ledger_settings.MAX_ENTRY_AMOUNT == 5
    assert ledger_settings.MAX_ENTRY_AMOUNT == 1_000_000
    with pytest.raises(AttributeError, match="LEDGER_NO_SUCH"):
        ledger_settings.NO_SUCH  # noqa: B018


def test_check_reports_operation_without_amount(temp_app):
    temp_app("shop", _full_class("ShopOperation", SHOP_BUY="SHOP_BUY"))
    assert "ledger_core.E001" in ledger_check_ids()


def test_amount_in_settings_satisfies_check(temp_app):
    temp_app("shop", _full_class("ShopOperation", SHOP_BUY="SHOP_BUY"))
    with override_settings(LEDGER_OPERATION_CONFIG={"SHOP_BUY": -2}):
        assert "ledger_core.E001" not in ledger_check_ids()
        assert registry.policy("shop", "SHOP_BUY").amount == -2


def test_check_reports_two_amounts_for_one_value(temp_app):
    temp_app(
        "shop",
        _full_class("ShopOperation", CONTENT_CREATION="CONTENT_CREATION"),
        {"CONTENT_CREATION": OperationPolicy(amount=-3)},
    )
    assert "ledger_core.E002" in ledger_check_ids()


def test_check_reports_overlong_value(temp_app):
    long_value = "X" * 65
    temp_app(
        "shop",
        _full_class("ShopOperation", LONG=long_value),
        {long_value: OperationPolicy(amount=1)},
    )
    assert "ledger_core.E003" in ledger_check_ids()


@pytest.mark.parametrize(
    "config",
    [
        {"DAILY_REWARD": "1"},
        {"DAILY_REWARD": True},
        {"DAILY_REWARD": {"amount": 1.5}},
        {"DAILY_REWARD": {"colour": "red"}},
        {"DAILY_REWARD": {"posters": ["everyone"]}},
        {"DAILY_REWARD": {"limit": "weekly"}},
    ],
)
def test_check_reports_bad_overrides(config):
    with override_settings(LEDGER_OPERATION_CONFIG=config):
        assert "ledger_core.E004" in ledger_check_ids()


def test_check_warns_about_unknown_override():
    with override_settings(LEDGER_OPERATION_CONFIG={"DIALY_REWARD": 1}):
        assert "ledger_core.W002" in ledger_check_ids()


def test_check_reports_amount_over_cap():
    with override_settings(
        LEDGER_OPERATION_CONFIG={"CREDIT_ADD": 500}, LEDGER_MAX_ENTRY_AMOUNT=100
    ):
        assert "ledger_core.E006" in ledger_check_ids()


def test_check_reports_bad_cap():
    with override_settings(LEDGER_MAX_ENTRY_AMOUNT=0):
        assert "ledger_core.E007" in ledger_check_ids()


def test_operation_values_need_no_ledger_core_migration():
    from ledger_core.models import LedgerEntry

    assert not LedgerEntry._meta.get_field("operation").choices


def test_ledger_core_imports_no_consumer_or_site_module():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "ledger_core"
    pattern = re.compile(r"^\s*(from|import)\s+(content_app|rewards_app|ledger_site)\b", re.M)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("45s", timedelta(seconds=45)),
     (90, timedelta(seconds=90)), (timedelta(minutes=5), timedelta(minutes=5))],
)  # fmt: skip
def test_lifetimes_read(value, expected):
    assert parse_lifetime(value) == expected


@pytest.mark.parametrize(
    "value", ["\u00b2d", "\u0665d", "5_0d", "d", "0d", "30", "3654d", True, -1]
)
def test_lifetimes_refused_with_the_expected_form(value):
    with pytest.raises(ValueError, match="duration such as|positive and at most"):
        parse_lifetime(value)
