"""Hostile bodies never reach a 500: deeply nested JSON, oversize bodies,
wrong types, lone surrogates, arbitrary bytes, on every write endpoint. Generated with
hypothesis (bounded in examples); each answer is a 4xx in the error shape and
nothing is stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_core.models import LedgerEntry
from tests.conftest import bearer_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

WRITES = [
    "/api/content/ledger/",
    "/api/content/ledger/batch/",
    "/api/rewards/ledger/",
    "/api/content/items/",
    "/api/rewards/daily/",
    "/api/rewards/referrals/",
    "/api/auth/register/",
    "/api/auth/token/",
    "/api/auth/token/refresh/",
    "/api/auth/logout/",
    "/api/auth/password/",
    "/api/auth/password/reset/",
    "/api/auth/password/reset/confirm/",
    "/api/auth/email/",
    "/api/auth/email/verify/",
    "/api/webhooks/",
]

# Texts with lone surrogates, which JSON writes as "\ud800" escapes and no UTF-8 text holds.
surrogates = st.text(alphabet=st.characters(categories=["Cs", "Ll"]), max_size=5)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
) | surrogates
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
fields = st.sampled_from(
    ["owner_id", "operation", "nonce", "amount", "metadata", "entries", "username", "password",
     "refresh", "title", "body", "referrer", "email", "uid", "token", "new_password",
     "old_password", "url"]
)  # fmt: skip
bodies = st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(fields, json_values, max_size=6).map(json.dumps),
    # Nesting far past the limit, as arrays or objects, at the top or in a field.
    st.integers(min_value=33, max_value=5_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=33, max_value=5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(min_value=33, max_value=3_000).map(
        lambda n: json.dumps({"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "x"})[:-1]
        + ', "metadata": ' + '{"m":' * n + "1" + "}" * n + "}"
    ),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)  # fmt: skip

HOSTILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def manager_bearer(db, settings):
    # Password resets mail (to Django's test outbox). Set once per test, not
    # per example: each assignment stacks an override of the settings.
    settings.EMAIL_ENABLED = True
    return bearer_client(UserFactory(username="fuzzer", perms=["ledger_core.post_any_entry"]))


@HOSTILE
@given(path=st.sampled_from(WRITES), body=bodies)
def test_no_body_is_a_server_error(manager_bearer, path, body):
    response = manager_bearer.generic("POST", path, body, content_type="application/json")
    assert response.status_code < 500, (path, body[:200], response.content[:300])
    if response.status_code >= 400:
        assert "code" in response.json(), response.content[:300]
    if response.status_code >= 400 and "ledger" in path:
        assert not LedgerEntry.objects.filter(owner_id="fuzzer-never").exists()


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(size=st.integers(min_value=2_700_000, max_value=4_000_000))
def test_oversize_bodies_are_413(manager_bearer, size):
    body = json.dumps({"owner_id": "bob", "operation": "CREDIT_ADD", "nonce": "big",
                       "metadata": {"pad": "x" * size}})  # fmt: skip
    response = manager_bearer.generic("POST", "/api/content/ledger/", body,
                                      content_type="application/json")  # fmt: skip
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert not LedgerEntry.objects.exists()
