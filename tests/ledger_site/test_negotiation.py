"""The negotiation shortcut answers exactly what DRF's own negotiation does."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from ledger_site.negotiation import LedgerContentNegotiation

RENDERERS = [JSONRenderer(), BrowsableAPIRenderer()]


@pytest.mark.parametrize(
    "accept, query",
    [
        (None, ""),
        ("*/*", ""),
        ("", ""),
        (" */* ", ""),
        ("application/json", ""),
        ("text/html", ""),
        ("text/html,application/xhtml+xml,*/*;q=0.8", ""),
        ("application/json; indent=4", ""),
        (None, "format=api"),
        ("*/*", "format=json"),
    ],
)
def test_same_answer_as_drf(accept, query):
    factory = APIRequestFactory()
    extra = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(factory.get(f"/api/content/ledger/alice/?{query}", **extra))
    assert _answer(LedgerContentNegotiation(), request) == _answer(
        DefaultContentNegotiation(), request
    )


def _answer(negotiation, request):
    try:
        renderer, media_type = negotiation.select_renderer(request, RENDERERS)
    except NotAcceptable:
        return "406"
    return type(renderer), media_type


def test_api_answers_json_without_accept_and_html_when_asked(client, user):
    from tests.conftest import bearer_client

    api = bearer_client(user)
    assert api.get("/api/content/ledger/alice/")["Content-Type"] == "application/json"
    html = api.get("/api/content/ledger/alice/", HTTP_ACCEPT="text/html")
    assert html["Content-Type"].startswith("text/html")
