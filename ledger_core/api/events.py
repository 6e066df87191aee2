"""``GET /api/events/``: the ledger's event feed, for auditors and managers;
``/api/webhooks/``: subscriptions that push it (managers).

The order and the exactly-once promise are ``ledger_core.events``'; this view
validates the query, reads one page and, with ``wait``, polls until an event
arrives or the wait is over. A long poll occupies its worker meanwhile, so
only ``LEDGER_EVENTS_MAX_WAITING`` of them wait at once across the site; one
more answers at once.
"""

from __future__ import annotations

import time
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..actors import Actor
from ..conf import ledger_settings
from ..events import EVENT_TYPES, MAX_LIMIT, Cursor, Event, event_page, waiting_slot
from ..exceptions import Forbidden, SubscriptionNotFound
from ..models import WebhookSubscription
from ..webhooks import (
    KEEP_OLD_SECRET_MAX,
    subscription_change,
    subscription_create,
    subscription_delete,
    subscription_ping,
)
from .schema import NOT_FOUND, READ_ERRORS, WRITE_ERRORS
from .serializers import AppLabelField, EntrySerializer, StrictIntegerField

MAX_WAIT = 30
_POLL_SECONDS = 0.25


class CursorField(serializers.CharField):
    def to_internal_value(self, data: Any) -> Cursor:
        cursor = Cursor.parse(super().to_internal_value(data))
        if cursor is None:
            raise serializers.ValidationError("Not a cursor of this feed (use `next`).")
        return cursor


class EventQuerySerializer(serializers.Serializer):
    after = CursorField(required=False, help_text="`next` of the previous page; omitted: start")
    limit = StrictIntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=100)
    app = AppLabelField(required=False)
    owner_id = serializers.CharField(required=False, max_length=128)
    type = serializers.ChoiceField(required=False, choices=EVENT_TYPES)
    wait = StrictIntegerField(
        required=False, min_value=0, max_value=MAX_WAIT, default=0,
        help_text="seconds to wait for an event when there is none yet (long poll); answered "
        "at once while LEDGER_EVENTS_MAX_WAITING requests of the site wait already",
    )  # fmt: skip


class EventSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the event's position in the feed")
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    created_at = serializers.DateTimeField()
    app = serializers.CharField()
    owner_id = serializers.CharField()
    data = serializers.SerializerMethodField(help_text="the entry or the hold as the API shows it")

    def get_data(self, event: Event) -> dict:
        if isinstance(event.data, dict):
            return event.data
        return EntrySerializer(event.data).data


class EventPageSerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    next = serializers.CharField(help_text="the cursor to ask for the next page with")


class EventFeedView(APIView):
    """Every committed event, in one fixed order, each once, from any cursor."""

    ratelimit_group = "ledger_read"

    @extend_schema(
        summary="The event feed (auditors and managers)",
        parameters=[EventQuerySerializer],
        responses={200: EventPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """A page of events after ``after``; ``next`` continues it."""
        if not Actor.for_user(request.user).can_view_any:
            raise Forbidden("The event feed is for auditors and managers.")
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        arguments = {
            "after": data.get("after", Cursor()),
            "limit": data["limit"],
            "app": data.get("app"),
            "owner_id": data.get("owner_id"),
            "types": (data["type"],) if data.get("type") else EVENT_TYPES,
        }
        deadline = time.monotonic() + min(data["wait"], ledger_settings.EVENTS_MAX_WAIT)
        events, after = event_page(**arguments)
        if not events and time.monotonic() < deadline:
            with waiting_slot(ledger_settings.EVENTS_MAX_WAITING) as waiting:
                while waiting and not events and time.monotonic() < deadline:
                    time.sleep(_POLL_SECONDS)
                    events, after = event_page(**{**arguments, "after": after})
        return Response(EventPageSerializer({"events": events, "next": str(after)}).data)


class WebhookSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.URLField(max_length=500)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), required=False, default=list,
        help_text="empty: every type",
    )  # fmt: skip
    app = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    after = CursorField(
        required=False, write_only=True,
        help_text="deliver the events after this position (an event's id or a page's `next`; "
        "0.0.0 is the feed's beginning); omitted: after the feed's current end",
    )  # fmt: skip
    active = serializers.BooleanField(read_only=True)
    cursor = serializers.CharField(read_only=True)
    last_error = serializers.CharField(read_only=True)
    failing_since = serializers.DateTimeField(read_only=True, allow_null=True)
    previous_secret_until = serializers.DateTimeField(
        read_only=True, allow_null=True,
        help_text="after a rotation that kept the old secret: until then, deliveries carry a "
        "second signature made with it",
    )  # fmt: skip
    created_at = serializers.DateTimeField(read_only=True)


class WebhookChangeSerializer(WebhookSerializer):
    """A PATCH: any of the writable fields (read with ``partial=True``, so
    none is required and no default fills one in), ``active`` and ``after``."""

    active = serializers.BooleanField(
        required=False, help_text="false stops deliveries; true resumes them at once"
    )
    after = CursorField(
        required=False, write_only=True,
        help_text="move the cursor: deliver the events after this position (an event's id or "
        "a page's `next`; 0.0.0 is the feed's beginning), at once",
    )  # fmt: skip


class WebhookSecretSerializer(serializers.Serializer):
    keep_old_seconds = StrictIntegerField(
        required=False, default=0, min_value=0, max_value=KEEP_OLD_SECRET_MAX,
        help_text="how long deliveries stay signed with the replaced secret too, so the "
        "receiver can switch to the new one without refusing any; 0 (the default, for a "
        "secret that leaked): not at all",
    )  # fmt: skip


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="shown once: the key of the Ledger-Signature HMAC"
    )


def _manager(request: Request) -> Actor:
    actor = Actor.for_user(request.user)
    if not actor.can_post_any:
        raise Forbidden("Webhooks are for managers.")
    return actor


class WebhookListView(APIView):
    """Webhook subscriptions (managers): create one, or list them (no secrets)."""

    @extend_schema(summary="Webhook subscriptions", responses={200: WebhookSerializer(many=True),
                                                               **READ_ERRORS})  # fmt: skip
    def get(self, request: Request) -> Response:
        _manager(request)
        subscriptions = WebhookSubscription.objects.order_by("id")
        return Response(WebhookSerializer(subscriptions, many=True).data)

    @extend_schema(
        summary="Subscribe a URL to the event feed (its secret is shown once)",
        request=WebhookSerializer,
        responses={201: NewWebhookSerializer, **WRITE_ERRORS},
    )
    def post(self, request: Request) -> Response:
        actor = _manager(request)
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = subscription_create(actor=actor, **serializer.validated_data)
        return Response(NewWebhookSerializer(subscription).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    """One webhook subscription (managers): read it, change it, delete it."""

    @extend_schema(
        summary="A webhook subscription",
        responses={200: WebhookSerializer, 404: NOT_FOUND, **READ_ERRORS},
    )
    def get(self, request: Request, subscription_id: int) -> Response:
        _manager(request)
        subscription = WebhookSubscription.objects.filter(pk=subscription_id).first()
        if subscription is None:
            raise SubscriptionNotFound()
        return Response(WebhookSerializer(subscription).data)

    @extend_schema(
        summary="Change a webhook subscription: its URL, filters, active, or where it resumes",
        request=WebhookChangeSerializer,
        responses={200: WebhookSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def patch(self, request: Request, subscription_id: int) -> Response:
        actor = _manager(request)
        serializer = WebhookChangeSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        subscription = subscription_change(
            subscription_id, actor=actor, **serializer.validated_data
        )
        return Response(WebhookSerializer(subscription).data)

    @extend_schema(
        summary="Delete a webhook subscription",
        responses={204: None, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def delete(self, request: Request, subscription_id: int) -> Response:
        subscription_delete(subscription_id, actor=_manager(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSecretView(APIView):
    """A new signing secret for a webhook subscription (managers)."""

    @extend_schema(
        summary="Give a webhook subscription a new signing secret (shown once)",
        description=(
            "Once a delivery in flight has ended, every delivery is signed with the new "
            "secret and, for `keep_old_seconds`, with the old one too (a second `v1`), so "
            "the receiver can switch without refusing any. Without it (a secret that leaked) "
            "the old secret signs nothing more; until the receiver checks the new one it "
            "refuses the deliveries, and they are retried in order, as any refused delivery "
            "is. The body is optional."
        ),
        request=WebhookSecretSerializer,
        responses={200: NewWebhookSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def post(self, request: Request, subscription_id: int) -> Response:
        actor = _manager(request)
        serializer = WebhookSecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = subscription_change(
            subscription_id, actor=actor, new_secret=True, **serializer.validated_data
        )
        return Response(NewWebhookSerializer(subscription).data)


class PingSerializer(serializers.Serializer):
    delivered = serializers.BooleanField(help_text="the URL answered 2xx")
    error = serializers.CharField(
        allow_null=True, help_text="what went wrong (as the admin's last error shows it), or null"
    )


class WebhookPingView(APIView):
    """A delivery with no events to a subscription's URL, now (managers)."""

    @extend_schema(
        summary="Try a webhook subscription's URL: a signed delivery with no events",
        description=(
            'POSTs `{"events": []}` to the URL, signed as every delivery is, and answers '
            "whether it was acknowledged (2xx). The cursor and the failure state do not change; "
            "an inactive subscription can be tried too. Waits for the answer (up to "
            "LEDGER_WEBHOOK_TIMEOUT to connect and as long again for the answer)."
        ),
        request=None,
        responses={200: PingSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def post(self, request: Request, subscription_id: int) -> Response:
        error = subscription_ping(subscription_id, actor=_manager(request))
        return Response(PingSerializer({"delivered": error is None, "error": error}).data)
