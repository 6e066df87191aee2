"""The content app's HTTP API: its ledger endpoints and content items."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ledger_core.api import LedgerViewSet, domain_nonce_field, replay_response, request_actor
from ledger_core.api.pagination import StrictCursorPagination
from ledger_core.api.schema import (
    BAD_REQUEST,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHORIZED,
    WRITE_ERRORS,
)
from ledger_core.api.serializers import StrictCharField

from .models import ContentItem
from .operations import ContentOperation
from .services import item_access, item_create


class ContentLedgerViewSet(LedgerViewSet):
    """Ledger endpoints accepting the content app's operations."""

    operations = ContentOperation


class ItemCreateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200)
    body = StrictCharField(max_length=20_000, trim_whitespace=False)
    nonce = domain_nonce_field()


class ItemAccessSerializer(serializers.Serializer):
    nonce = domain_nonce_field()


class ItemSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = ContentItem
        fields = ["id", "owner", "title", "body", "nonce", "payment_entry_id", "created_at"]
        read_only_fields = fields


class ItemAccessResponseSerializer(ItemSerializer):
    access_entry_id = serializers.IntegerField(read_only=True)

    class Meta(ItemSerializer.Meta):
        fields = [*ItemSerializer.Meta.fields, "access_entry_id"]
        read_only_fields = fields


class ItemPagination(StrictCursorPagination):
    page_size = 20
    max_page_size = 100


@extend_schema_view(
    list=extend_schema(
        summary="Your content items, newest first",
        responses={
            200: ItemSerializer(many=True),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            429: RATE_LIMITED,
        },
    ),
    retrieve=extend_schema(
        summary="One of your content items",
        responses={200: ItemSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND, 429: RATE_LIMITED},
    ),
)
class ContentItemViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Content items: created by paying CONTENT_CREATION, read by recording CONTENT_ACCESS."""

    serializer_class = ItemSerializer
    pagination_class = ItemPagination

    def get_queryset(self):
        # The caller's own items; anyone else's item is a 404 here.
        return ContentItem.objects.filter(owner_id=self.request.user.pk).select_related("owner")

    def get_serializer_class(self):
        if self.action == "create":
            return ItemCreateSerializer
        if self.action == "access":
            return ItemAccessSerializer
        return ItemSerializer

    @extend_schema(
        summary="Create an item, paying CONTENT_CREATION in the same transaction",
        request=ItemCreateSerializer,
        responses={
            201: ItemSerializer,
            200: OpenApiResponse(
                ItemSerializer, description="replay of a creation with this nonce"
            ),
            **WRITE_ERRORS,
        },
    )
    def create(self, request: Request) -> Response:
        """Create an item and pay CONTENT_CREATION (-5) for it, in one transaction."""
        serializer = ItemCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = item_create(
            owner=request.user,  # a database user: unsafe methods load it
            title=data["title"],
            body=data["body"],
            nonce=data.get("nonce"),
            actor=request_actor(request),
        )
        return replay_response(ItemSerializer(result.item).data, replayed=result.replayed)

    @extend_schema(
        summary="Read any item; records a CONTENT_ACCESS (0 credits) entry for you",
        request=ItemAccessSerializer,
        responses={200: ItemAccessResponseSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def access(self, request: Request, pk: str | None = None) -> Response:
        """Read any item; records a CONTENT_ACCESS (0 credits) entry for the caller."""
        serializer = ItemAccessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = self._any_item(pk)
        result = item_access(
            item=item,
            user=request.user,
            actor=request_actor(request),
            nonce=serializer.validated_data.get("nonce"),
        )
        item.access_entry_id = result.entry.pk
        return replay_response(
            ItemAccessResponseSerializer(item).data,
            replayed=result.replayed,
            created=status.HTTP_200_OK,
        )

    def _any_item(self, pk: str | None) -> ContentItem:
        item = ContentItem.objects.select_related("owner").filter(pk=_item_pk(pk)).first()
        if item is None:
            raise Http404
        return item

    def get_object(self) -> ContentItem:
        _item_pk(self.kwargs.get("pk"))
        return super().get_object()


def _item_pk(raw: str | None) -> int:
    """An item id from the URL; anything that is not a sane integer is a 404."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Http404
    return int(raw)
