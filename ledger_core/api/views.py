"""The ledger viewset every consumer app mounts under its own prefix.

A consumer app writes::

    class ContentLedgerViewSet(LedgerViewSet):
        operations = ContentOperation

    urlpatterns = ledger_urls(ContentLedgerViewSet)

and gets balance, post, batch and history endpoints that accept only its own
operations; its label comes from the registry (``ledger_core.operations``),
where its ``AppConfig.ready()`` registered the class. The viewset validates
input, calls one service or selector and renders the result; the rules live
in ``ledger_core.services``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from .. import metrics
from ..actors import Actor
from ..exceptions import BatchRefused, EntryNotFound, Forbidden, HoldNotFound, InvalidEntry
from ..models import LedgerEntry
from ..operations import LedgerOperation, registry
from ..selectors import (
    balance_at,
    balance_get,
    balances_get,
    entry_get,
    entry_list,
    hold_get,
    hold_list,
)
from ..services import (
    EntryRequest,
    PostResult,
    entry_post,
    entry_post_batch,
    entry_reverse,
    hold_capture,
    hold_place,
    hold_void,
    holdable_operations,
)
from ..validation import owner_id_validate
from .pagination import EntryCursorPagination
from .schema import NOT_FOUND, READ_ERRORS, WRITE_ERRORS
from .serializers import (
    BalanceAtSerializer,
    BalanceQuerySerializer,
    BalanceSerializer,
    BalancesQuerySerializer,
    BalancesSerializer,
    BatchPostSerializer,
    BatchResultSerializer,
    CaptureResultSerializer,
    DryRunSerializer,
    EntryFilterSerializer,
    EntryPageSerializer,
    EntryPostSerializer,
    EntrySerializer,
    HoldCaptureSerializer,
    HoldDryRunSerializer,
    HoldFilterSerializer,
    HoldPageSerializer,
    HoldPostSerializer,
    HoldSerializer,
    HoldVoidSerializer,
    ReverseSerializer,
    with_operations,
)

#: Header of a 200 answer that replays an earlier request with the same nonce.
REPLAY_HEADER = "Idempotent-Replayed"

OWNER_PARAMETER = OpenApiParameter(
    "owner_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="1-128 characters of A-Z a-z 0-9 _ . @ + : -",
)

POST_EXAMPLES = [
    OpenApiExample(
        "owner spends one credit",
        value={"owner_id": "alice", "operation": "CREDIT_SPEND", "nonce": "order-42"},
        request_only=True,
    ),
    OpenApiExample(
        "manager grants credits with a reason",
        value={
            "owner_id": "alice",
            "operation": "CREDIT_ADD",
            "nonce": "promo-2026-11",
            "amount": 50,
            "metadata": {"reason": "November promo"},
        },
        request_only=True,
    ),
    OpenApiExample(
        "created entry",
        value={
            "id": 42,
            "owner_id": "alice",
            "app": "content",
            "operation": "CREDIT_SPEND",
            "amount": -1,
            "balance_after": 2,
            "nonce": "order-42",
            "metadata": None,
            "created_at": "2026-11-26T09:00:00Z",
        },
        response_only=True,
        status_codes=["201"],
    ),
]


def request_actor(request: Request) -> Actor:
    """The ``Actor`` for an authenticated request."""
    return Actor.for_user(request.user)


def replay_response(
    body: Any, *, replayed: bool, created: int = status.HTTP_201_CREATED
) -> Response:
    """``created`` (201) with ``body``, or 200 + ``Idempotent-Replayed: true`` for a replay."""
    if replayed:
        return Response(body, status=status.HTTP_200_OK, headers={REPLAY_HEADER: "true"})
    return Response(body, status=created)


def post_response(result: PostResult) -> Response:
    """201 with the new entry, or 200 + ``Idempotent-Replayed: true`` for a replay."""
    return replay_response(EntrySerializer(result.entry).data, replayed=result.replayed)


class LedgerSchema(AutoSchema):
    """drf-spectacular's schema, naming an owner's holds and entries
    ``..._holds_list`` and ``..._entries_list`` (the default names them like
    a hold's or an entry's own page, ``..._retrieve``)."""

    def get_operation_id(self) -> str:
        operation_id = super().get_operation_id()
        if getattr(self.view, "action", None) in ("owner_holds", "entries"):
            return operation_id.removesuffix("_retrieve") + "_list"
        return operation_id


#: The query of a page of entries or holds (their actions paginate by hand).
PAGE_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, description="from next/previous"),
    OpenApiParameter(
        "page_size",
        dict(EntryCursorPagination.page_size_schema),
        description=EntryCursorPagination.page_size_description(),
    ),
]
#: ``?dry_run=`` values, compared in lower case.
DRY_RUN_VALUES = {"true": True, "1": True, "false": False, "0": False}


class LedgerViewSet(viewsets.GenericViewSet):
    """Balance, post, history and holds for one consumer app's operations."""

    schema = LedgerSchema()
    #: The app's registered operation class; it names the app (its label).
    operations: ClassVar[type[LedgerOperation] | None] = None
    lookup_field = "owner_id"
    #: The writes with a dry run; ``ledger_core.middleware`` refuses one
    #: asked of any other (a batch, a reversal, a capture, a void).
    dry_run_actions: ClassVar[tuple[str, ...]] = ("create", "hold_create")
    lookup_value_regex = "[^/]+"
    pagination_class = EntryCursorPagination

    def get_queryset(self) -> QuerySet[LedgerEntry]:
        """The entries of the owner in the URL, newest first (the history's
        rows; the browsable API's filter form asks for it too). Read access is
        checked by the action before anything is read."""
        owner_id = self.kwargs.get("owner_id")
        if not isinstance(owner_id, str):
            return LedgerEntry.objects.none()
        return entry_list(owner_id=owner_id)

    def get_serializer_class(self) -> type[serializers.Serializer]:
        """The action's body (form, schema): a hold's, a capture's, a
        reversal's, or a post's offering this app's operations."""
        label = self.app_label
        if self.action == "hold_create":
            return with_operations(HoldPostSerializer, label, tuple(holdable_operations(label)))
        return {
            "balances": BalancesQuerySerializer,
            "reverse": ReverseSerializer,
            "hold_capture": HoldCaptureSerializer,
            "hold_void": HoldVoidSerializer,
        }.get(self.action) or with_operations(
            EntryPostSerializer, label, tuple(registry.postable(label, direct=True))
        )

    @property
    def app_label(self) -> str:
        """The label the viewset's operation class is registered under."""
        label = registry.label_of(self.operations) if self.operations is not None else None
        if label is None:  # reported at start-up as ledger_core.E009
            raise ImproperlyConfigured(f"{type(self).__qualname__}: operations not registered")
        return label

    def _readable_owner(self, request: Request, owner_id: str) -> str:
        owner_id_validate(owner_id)
        if not request_actor(request).may_view(owner_id):
            raise Forbidden("You may only read your own ledger.")
        return owner_id

    @extend_schema(
        summary="An owner's balance, now or as of an instant",
        parameters=[OWNER_PARAMETER, BalanceQuerySerializer],
        responses={
            200: PolymorphicProxySerializer(
                component_name="BalanceOrBalanceAt",
                serializers=[BalanceSerializer, BalanceAtSerializer],
                resource_type_field_name=None,
            ),
            **READ_ERRORS,
        },
    )
    def retrieve(self, request: Request, owner_id: str) -> Response:
        """The owner's balance (0 for an owner without entries); with ``?at=``,
        ``{owner_id, at, balance, version}`` as of that instant."""
        owner_id = self._readable_owner(request, owner_id)
        query = BalanceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        at = query.validated_data.get("at")
        if at is not None:
            return Response(BalanceAtSerializer(balance_at(owner_id=owner_id, at=at)).data)
        return Response(BalanceSerializer(balance_get(owner_id=owner_id)).data)

    @extend_schema(
        summary="Post an entry (idempotent by nonce), or try it (?dry_run=true)",
        parameters=[
            OpenApiParameter(
                "dry_run",
                OpenApiTypes.BOOL,
                description="true: answer 200 {dry_run: true, entry} (the entry as it would "
                "be, without an id) or the error the post would get; nothing is stored, no "
                "nonce is used, and it counts against the read rate limit. true/1 or "
                "false/0 (any case); any other value is 400",
            )
        ],
        responses={
            201: EntrySerializer,
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="ReplayOrDryRun",
                    serializers=[EntrySerializer, DryRunSerializer],
                    resource_type_field_name=None,
                ),
                description="a replay of an earlier post with the same nonce and payload "
                "(header `Idempotent-Replayed: true`, nothing new stored) or, with "
                "`dry_run`, `{dry_run: true, entry}`",
            ),
            **WRITE_ERRORS,
        },
        examples=POST_EXAMPLES,
    )
    def create(self, request: Request) -> Response:
        """Post one entry to an owner's ledger (idempotent by nonce); with
        ``?dry_run=true``, answer what the post would do and store nothing."""
        data = self._validated_post(request)
        arguments = {
            "owner_id": data["owner_id"],
            "operation": data["operation"],
            "nonce": data["nonce"],
            "app": self.app_label,
            "actor": request_actor(request),
            "amount": data.get("amount"),
            "metadata": data.get("metadata"),
            "expires_at": data.get("expires_at"),
            "direct": True,
        }
        if self.dry_run:
            result = entry_post(**arguments, dry_run=True)
            return Response(DryRunSerializer({"dry_run": True, "entry": result.entry}).data)
        return post_response(entry_post(**arguments))

    @property
    def dry_run(self) -> bool:
        """A ``?dry_run=true`` request: checked like the real one, stores nothing.

        Any other value than ``true``/``1``/``false``/``0`` (any case) is a
        400, so a dry run meant as ``?dry_run`` or ``?dry_run=yes`` never
        posts for real."""
        raw = self.request.query_params.get("dry_run")
        if raw is None:
            return False
        value = DRY_RUN_VALUES.get(raw.lower())
        if value is None:
            raise ValidationError({"dry_run": ["Must be true or false."]})
        return value

    @property
    def ratelimit_group(self) -> str | None:
        # A dry run reads, and so does asking for many balances: they count
        # against the read limit.
        if self.action == "balances":
            return "ledger_read"
        return "ledger_read" if self.action in self.dry_run_actions and self.dry_run else None

    def _validated_post(self, request: Request) -> dict[str, Any]:
        """The post's fields, or a 400; refusals here are counted like the service's."""
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            raw = request.data.get("operation") if isinstance(request.data, dict) else None
            metrics.entry_rejected(app=self.app_label, operation=raw, reason="invalid")
            raise ValidationError(serializer.errors)
        return serializer.validated_data

    @extend_schema(
        summary="Post up to 1000 entries in one request",
        description=(
            "With `atomic` (the default) all entries commit or none do: a refusal "
            "answers with that entry's error status and body plus its `index`. With "
            "`atomic: false` each entry stands alone and the 200 response lists every "
            "result. Validation, permissions, idempotency and limits are those of "
            "single posts; balance rows are locked in owner order (no deadlocks)."
        ),
        request=BatchPostSerializer,
        responses={
            201: BatchResultSerializer,
            200: OpenApiResponse(
                BatchResultSerializer, description="non-atomic results, or all replays"
            ),
            **WRITE_ERRORS,
        },
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        """Post many entries (atomic by default)."""
        serializer = BatchPostSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        atomic = serializer.validated_data["atomic"]
        raw_items = serializer.validated_data["entries"]
        requests: list[EntryRequest] = []
        positions: list[int] = []
        items: list[dict[str, Any] | None] = [None] * len(raw_items)
        # One serializer validates every item (its fields are built once).
        item_serializer = EntryPostSerializer()
        for index, raw in enumerate(raw_items):
            try:
                data = item_serializer.run_validation(raw)
            except ValidationError as exc:
                error = _item_error(index, exc.detail)
                operation = raw.get("operation") if isinstance(raw, dict) else None
                metrics.entry_rejected(app=self.app_label, operation=operation, reason="invalid")
                if atomic:
                    raise BatchRefused(index, error) from None
                items[index] = {"status": 400, "error": error.as_dict()}
                continue
            requests.append(
                EntryRequest(
                    owner_id=data["owner_id"],
                    operation=data["operation"],
                    nonce=data["nonce"],
                    amount=data.get("amount"),
                    metadata=data.get("metadata"),
                    expires_at=data.get("expires_at"),
                )
            )
            positions.append(index)
        try:
            results = entry_post_batch(
                app=self.app_label,
                actor=request_actor(request),
                entries=requests,
                atomic=atomic,
                direct=True,
            )
        except BatchRefused as refused:
            raise BatchRefused(positions[refused.index], refused.error) from None
        stored = [result.entry for result in results if result.error is None]
        rendered = iter(EntrySerializer(stored, many=True).data)
        for position, result in zip(positions, results, strict=True):
            if result.error is not None:
                items[position] = {"status": result.status, "error": result.error.as_dict()}
            else:
                items[position] = {"status": result.status, "entry": next(rendered)}
        created = any(item["status"] == 201 for item in items)
        status_code = status.HTTP_201_CREATED if atomic and created else status.HTTP_200_OK
        return Response({"atomic": atomic, "results": items}, status=status_code)

    # ``ledger/batch/``, ``ledger/balances/`` and ``ledger/holds/`` are list
    # routes, and they are also the balance URL of the owners ``batch``,
    # ``balances`` and ``holds`` (valid owner ids): a GET there is that owner's
    # balance. The schema documents it once, as
    # ``ledger/{owner_id}/``.
    @extend_schema(exclude=True)
    @batch.mapping.get
    def batch_owner_balance(self, request: Request) -> Response:
        """The balance of the owner ``batch``."""
        return self.retrieve(request, owner_id="batch")

    @extend_schema(
        summary="Balances of up to 1000 owners in one request (a read)",
        description=(
            "Each owner is answered as `GET .../ledger/{owner_id}/` answers it (an unknown "
            "owner has balance 0), all from one snapshot, in the order asked. Owners may ask "
            "for their own only, managers and auditors for anyone: one id that is not yours "
            "is a 403 and nothing is answered. It counts once against the read rate limit."
        ),
        request=BalancesQuerySerializer,
        responses={200: BalancesSerializer, **READ_ERRORS},
    )
    @action(detail=False, methods=["post"])
    def balances(self, request: Request) -> Response:
        """The balances of many owners (a POST, so that 1000 ids fit)."""
        query = BalancesQuerySerializer(data=request.data)
        query.is_valid(raise_exception=True)
        owner_ids = query.validated_data["owner_ids"]
        actor = request_actor(request)
        if not all(actor.may_view(owner_id) for owner_id in owner_ids):
            raise Forbidden("You may only read your own ledger.")
        return Response(BalancesSerializer({"balances": balances_get(owner_ids=owner_ids)}).data)

    @extend_schema(exclude=True)
    @balances.mapping.get
    def balances_owner_balance(self, request: Request) -> Response:
        """The balance of the owner ``balances``."""
        return self.retrieve(request, owner_id="balances")

    @extend_schema(
        summary="Reverse an entry of this app (managers): one REVERSAL entry, at most once",
        request=ReverseSerializer,
        responses={201: EntrySerializer, 200: EntrySerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def reverse(self, request: Request, entry_id: int) -> Response:
        """Undo an entry of this app with a REVERSAL entry of the opposite amount."""
        serializer = ReverseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = entry_reverse(
            entry_id=entry_id,
            app=self.app_label,
            actor=request_actor(request),
            nonce=serializer.validated_data["nonce"],
            reason=serializer.validated_data["reason"],
        )
        return post_response(result)

    @extend_schema(
        summary="An owner's entries, newest first",
        parameters=[
            OWNER_PARAMETER,
            EntryFilterSerializer,
            *PAGE_PARAMETERS,
        ],
        responses={200: EntryPageSerializer, **READ_ERRORS},
    )
    @action(detail=True, methods=["get"])
    def entries(self, request: Request, owner_id: str) -> Response:
        """The owner's entries, newest first, cursor-paginated."""
        owner_id = self._readable_owner(request, owner_id)
        filters = EntryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = entry_list(owner_id=owner_id, **filters.validated_data)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(EntrySerializer(page, many=True).data)

    @extend_schema(
        summary="An entry of the owner's ledger, by id (any app's)",
        responses={200: EntrySerializer, 404: NOT_FOUND, **READ_ERRORS},
    )
    def entry_detail(self, request: Request, entry_id: int) -> Response:
        """One entry, as the history shows it (with ``reversed_by``). The
        wallet is shared, so any app's entry is shown, as in the history."""
        entry = entry_get(entry_id=entry_id)
        if entry is None:
            raise EntryNotFound("No such entry.")
        self._readable_owner(request, entry.owner_id)
        return Response(EntrySerializer(entry).data)

    @extend_schema(
        summary="Reserve a debit's credits (a hold), or try it (?dry_run=true)",
        description=(
            "The credits stay in the balance but leave `available` until the hold is "
            "captured (one entry), voided or expires (`expires_in` seconds, default 900). "
            "Idempotent by nonce; hold nonces are their own namespace per owner."
        ),
        parameters=[
            OpenApiParameter(
                "dry_run",
                OpenApiTypes.BOOL,
                description="true: answer 200 {dry_run: true, hold} or the error the hold "
                "would get; nothing is stored and it counts against the read rate limit. "
                "true/1 or false/0 (any case); any other value is 400",
            )
        ],
        responses={
            201: HoldSerializer,
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="HoldReplayOrDryRun",
                    serializers=[HoldSerializer, HoldDryRunSerializer],
                    resource_type_field_name=None,
                ),
                description="a replay (header `Idempotent-Replayed: true`) or a dry run",
            ),
            **WRITE_ERRORS,
        },
    )
    @action(detail=False, methods=["post"], url_path="holds")
    def hold_create(self, request: Request) -> Response:
        """Place a hold: reserve a debit's credits until capture, void or expiry."""
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            raw = request.data.get("operation") if isinstance(request.data, dict) else None
            metrics.entry_rejected(app=self.app_label, operation=raw, reason="invalid")
            raise ValidationError(serializer.errors)
        data = serializer.validated_data
        result = hold_place(
            owner_id=data["owner_id"],
            operation=data["operation"],
            nonce=data["nonce"],
            app=self.app_label,
            actor=request_actor(request),
            amount=data.get("amount"),
            expires_in=data.get("expires_in"),
            dry_run=self.dry_run,
        )
        if self.dry_run:
            return Response(HoldDryRunSerializer({"dry_run": True, "hold": result.hold}).data)
        return replay_response(HoldSerializer(result.hold).data, replayed=result.replayed)

    @extend_schema(exclude=True)
    @hold_create.mapping.get
    def holds_owner_balance(self, request: Request) -> Response:
        """The balance of the owner ``holds`` (see ``batch_owner_balance``)."""
        return self.retrieve(request, owner_id="holds")

    @extend_schema(
        summary="A hold of this app",
        responses={200: HoldSerializer, 404: NOT_FOUND, **READ_ERRORS},
    )
    def hold_detail(self, request: Request, hold_id: int) -> Response:
        """One hold, with its status as of now."""
        hold = hold_get(hold_id=hold_id, app=self.app_label)
        if hold is None:
            raise HoldNotFound()
        self._readable_owner(request, hold.owner_id)
        return Response(HoldSerializer(hold).data)

    @extend_schema(
        summary="Capture a hold: post its entry (all or part), release the rest",
        request=HoldCaptureSerializer,
        responses={
            201: CaptureResultSerializer,
            200: OpenApiResponse(
                CaptureResultSerializer,
                description="captured before with the same amount (`Idempotent-Replayed: true`)",
            ),
            404: NOT_FOUND,
            **WRITE_ERRORS,
        },
    )
    def hold_capture(self, request: Request, hold_id: int) -> Response:
        """Capture a pending hold: one entry of its operation, at most once."""
        serializer = HoldCaptureSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = hold_capture(
            hold_id=hold_id,
            app=self.app_label,
            actor=request_actor(request),
            amount=serializer.validated_data.get("amount"),
        )
        body = CaptureResultSerializer({"entry": result.entry, "hold": result.hold}).data
        return replay_response(body, replayed=result.replayed)

    @extend_schema(
        summary="Void a hold: its credits are available again",
        request=HoldVoidSerializer,
        responses={200: HoldSerializer, 404: NOT_FOUND, **WRITE_ERRORS},
    )
    def hold_void(self, request: Request, hold_id: int) -> Response:
        """Void a pending hold (voiding a voided or expired one answers it as it is)."""
        serializer = HoldVoidSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = hold_void(
            hold_id=hold_id,
            app=self.app_label,
            actor=request_actor(request),
            reason=serializer.validated_data.get("reason", ""),
        )
        return Response(HoldSerializer(result.hold).data)

    @extend_schema(
        summary="An owner's holds, newest first",
        parameters=[
            OWNER_PARAMETER,
            HoldFilterSerializer,
            *PAGE_PARAMETERS,
        ],
        responses={200: HoldPageSerializer, **READ_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path="holds")
    def owner_holds(self, request: Request, owner_id: str) -> Response:
        """The owner's holds (of every app), newest first, cursor-paginated."""
        owner_id = self._readable_owner(request, owner_id)
        filters = HoldFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(hold_list(owner_id=owner_id, **filters.validated_data))
        return self.get_paginated_response(HoldSerializer(page, many=True).data)


def _item_error(index: int, errors: dict) -> InvalidEntry:
    first = next(iter(errors.items()), ("entry", ["Invalid."]))
    message = first[1][0] if isinstance(first[1], list) and first[1] else str(first[1])
    field = {} if first[0] == "non_field_errors" else {"field": first[0]}
    return InvalidEntry(f"entry {index}: {first[0]}: {message}", errors=errors, **field)


def list_route_segments(viewset: type[LedgerViewSet] = LedgerViewSet) -> frozenset[str]:
    """The path segments of ``viewset``'s list routes (``batch``, ``balances``, ``holds``):
    ``ledger/<segment>/`` is that route and, for a GET, the balance of the
    owner with that id; no user may register one as their username."""
    return frozenset(action.url_path for action in viewset.get_extra_actions() if not action.detail)


def ledger_urls(
    viewset: type[LedgerViewSet], *, basename: str = "ledger"
) -> list[URLPattern | URLResolver]:
    """URL patterns ``ledger/``, ``ledger/batch/``, ``ledger/balances/``, ``ledger/<owner_id>/``,
    ``ledger/<owner_id>/entries/``, ``ledger/entries/<id>/`` and the holds',
    named ``<app namespace>:ledger-...``."""
    router = SimpleRouter()
    router.register("ledger", viewset, basename=basename)
    entries = [
        path(
            "ledger/entries/<int:entry_id>/",
            viewset.as_view({"get": "entry_detail"}),
            name=f"{basename}-entry-detail",
        ),
        path(
            "ledger/entries/<int:entry_id>/reverse/",
            viewset.as_view({"post": "reverse"}),
            name=f"{basename}-reverse",
        ),
    ]
    holds = [
        path(
            f"ledger/holds/<int:hold_id>/{suffix}",
            viewset.as_view({method: name}),
            name=f"{basename}-{url_name}",
        )
        for suffix, method, name, url_name in (
            ("", "get", "hold_detail", "hold-detail"),
            ("capture/", "post", "hold_capture", "hold-capture"),
            ("void/", "post", "hold_void", "hold-void"),
        )
    ]
    return [*entries, *holds, *router.urls]
