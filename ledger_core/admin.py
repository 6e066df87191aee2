"""The Django admin as the ledger's audit tool.

Design decision: entries and balances are read-only for everyone, superusers
included; the only way to change a balance from the admin is the "post a
correcting entry" form, which calls ``entry_post`` so every ledger rule
applies and the entry records who posted it. The entry list is built for
large tables: no full-table COUNT (an estimate, or a count capped at 10,000),
filter choices from the operation registry instead of DISTINCT scans, a date
hierarchy that needs no MIN/MAX or date scans, and exact, indexed search.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from .actors import POST_ANY_PERMISSION, Actor
from .events import Cursor
from .exceptions import LedgerError, SubscriptionNotFound
from .models import (
    ENTRY_FIELDS,
    REVERSAL,
    Balance,
    CreditLot,
    HoldStatus,
    LedgerEntry,
    LedgerHold,
    WebhookSubscription,
)
from .operations import all_operation_values, registry
from .services import entry_post, entry_reverse, hold_capture, hold_void
from .validation import is_valid_owner_id
from .webhooks import (
    app_problem,
    cursor_problem,
    destination_problem,
    subscription_change,
    subscription_create,
    subscription_ping,
)

#: How long the admin's "keeping the old ones" rotation lets a replaced
#: webhook secret sign beside the new one.
KEEP_OLD_SECRET_ADMIN = 24 * 3600


class LargeTablePaginator(Paginator):
    """Counts without scanning a large table: the planner's estimate for an
    unfiltered list, otherwise a count capped at ``CAP`` rows."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [queryset.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > self.CAP:
                return int(row[0])
        return queryset[: self.CAP + 1].count()


class AppFilter(admin.SimpleListFilter):
    title = "app"
    parameter_name = "app"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(app.label, app.label) for app in registry.apps()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(app=self.value()) if self.value() else queryset


class OperationFilter(admin.SimpleListFilter):
    title = "operation"
    parameter_name = "operation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in sorted(all_operation_values())]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(operation=self.value()) if self.value() else queryset


class SafeLookupsMixin:
    """A changelist whose query holds a NUL character is an incorrect lookup,
    as Django treats any other value it cannot use, instead of a 500:
    PostgreSQL text cannot hold NUL, so no row could match it. For every
    model admin of the site (a filter or a lookup on a text field otherwise
    reaches the database with it)."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            raise IncorrectLookupParameters("A lookup value holds a NUL character.")
        return super().get_changelist_instance(request)  # type: ignore[misc]


class ReadOnlyAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """No add, change or delete for anyone: the pages answer 403."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _csv_rows(queryset: QuerySet) -> Iterator[list[Any]]:
    columns = [*ENTRY_FIELDS, "created_by"]
    yield columns
    for entry in queryset.order_by("id").iterator(chunk_size=2000):
        row = {name: getattr(entry, name) for name in columns}
        row["created_at"] = entry.created_at.isoformat()
        row["metadata"] = "" if entry.metadata is None else entry.metadata
        yield [row[name] for name in columns]


class _Echo:
    def write(self, value: str) -> str:
        return value


class CorrectionForm(forms.Form):
    app = forms.ChoiceField(help_text="the ledger app the entry is posted in")
    owner_id = forms.CharField(max_length=128)
    operation = forms.ChoiceField()
    amount = forms.IntegerField(required=False, help_text="leave empty for the configured amount")
    nonce = forms.CharField(max_length=128, help_text="idempotency key; keep it to retry safely")
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app"].choices = [(a.label, a.label) for a in registry.apps()]
        self.fields["operation"].choices = [(v, v) for v in sorted(all_operation_values())]
        self.fields["nonce"].initial = f"admin-{uuid.uuid4().hex}"


class ReverseForm(forms.Form):
    nonce = forms.CharField(max_length=128, help_text="idempotency key; keep it to retry safely")
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["nonce"].initial = f"admin-reverse-{uuid.uuid4().hex}"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "owner_id", "app", "operation", "amount", "balance_after", "nonce",
        "created_at", "created_by",
    ]  # fmt: skip
    list_filter = [AppFilter, OperationFilter, ("created_at", admin.DateFieldListFilter)]
    date_hierarchy = "created_at"
    search_help_text = "Exact owner id, or owner id and nonce separated by a space."
    search_fields = ["owner_id"]  # searching is done by get_search_results below
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 100
    actions = ["export_csv"]
    readonly_fields = [*(f.name for f in LedgerEntry._meta.fields), "reversal"]

    @admin.display(description="Reversal")
    def reversal(self, entry: LedgerEntry) -> str:
        """The entry's reversal, or a Reverse button for a manager."""
        done = LedgerEntry.objects.filter(owner_id=entry.owner_id, reverses=entry.pk).first()
        if done is not None:
            url = reverse("admin:ledger_core_ledgerentry_change", args=[done.pk])
            return format_html('reversed by <a href="{}">#{}</a>', url, done.pk)
        if entry.operation == REVERSAL or entry.amount == 0:
            return "not reversible"
        url = reverse("admin:ledger_core_ledgerentry_reverse", args=[entry.pk])
        return format_html('<a class="button" href="{}">Reverse</a>', url)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        # Exact matches only, so the (owner_id, ...) indexes are used.
        terms = search_term.split()
        if not terms:
            return queryset, False
        if len(terms) == 1:
            return queryset.filter(owner_id=terms[0]), False
        return queryset.filter(Q(owner_id=terms[0], nonce=terms[1])), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The balance page links here with ?owner_id=...
        return lookup == "owner_id" or super().lookup_allowed(lookup, value, request)

    @admin.action(description="Export selected entries as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse(
            (writer.writerow(row) for row in _csv_rows(queryset)), content_type="text/csv"
        )
        response["Content-Disposition"] = 'attachment; filename="ledger-entries.csv"'
        return response

    def get_urls(self) -> list:
        return [
            path(
                "post/",
                self.admin_site.admin_view(self.post_view),
                name="ledger_core_ledgerentry_post",
            ),
            path(
                "<int:entry_id>/reverse/",
                self.admin_site.admin_view(self.reverse_view),
                name="ledger_core_ledgerentry_reverse",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra_context = {
            **(extra_context or {}),
            "can_post_correction": request.user.has_perm(POST_ANY_PERMISSION),
        }
        return super().changelist_view(request, extra_context)

    def post_view(self, request: HttpRequest) -> HttpResponse:
        """Post a correcting entry through ``entry_post``: every ledger rule applies."""
        if not request.user.has_perm(POST_ANY_PERMISSION):
            raise PermissionDenied
        form = CorrectionForm(request.POST or None)

        def post(data: dict) -> tuple[str, str]:
            result = entry_post(
                owner_id=data["owner_id"], operation=data["operation"], nonce=data["nonce"],
                app=data["app"], actor=Actor.for_user(request.user), amount=data["amount"],
                metadata={"reason": data["reason"], "via": "admin"}, direct=True,
            )  # fmt: skip
            entry = result.entry
            verb = "was already posted" if result.replayed else "posted"
            return (
                f"Entry #{entry.pk} {verb}: {entry.operation} {entry.amount:+d} for "
                f"{entry.owner_id}, balance now {entry.balance_after}.",
                reverse("admin:ledger_core_ledgerentry_change", args=[entry.pk]),
            )

        return form_action(self, request, form, post) or self._form_page(
            request, form, "Post a correcting entry", "Post entry"
        )

    def reverse_view(self, request: HttpRequest, entry_id: int) -> HttpResponse:
        """Reverse an entry through ``entry_reverse``, with a required reason."""
        if not request.user.has_perm(POST_ANY_PERMISSION):
            raise PermissionDenied
        entry = LedgerEntry.objects.filter(pk=entry_id).first()
        if entry is None:
            raise Http404
        form = ReverseForm(request.POST or None)

        def reverse_entry(data: dict) -> tuple[str, str]:
            reversal = entry_reverse(
                entry_id=entry.pk, app=entry.app, actor=Actor.for_user(request.user),
                nonce=data["nonce"], reason=data["reason"],
            ).entry  # fmt: skip
            return (
                f"Entry #{entry.pk} reversed by #{reversal.pk} ({reversal.amount:+d}), "
                f"balance now {reversal.balance_after}.",
                reverse("admin:ledger_core_ledgerentry_change", args=[reversal.pk]),
            )

        done = form_action(self, request, form, reverse_entry)
        if done is not None:
            return done
        title = (
            f"Reverse entry #{entry.pk}: {entry.operation} {entry.amount:+d} for {entry.owner_id}"
        )
        return self._form_page(request, form, title, "Reverse entry")

    def _form_page(
        self, request: HttpRequest, form: forms.Form, title: str, submit_label: str
    ) -> TemplateResponse:
        return form_page(self, request, form, title, submit_label)


def form_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    form: forms.Form,
    action: Callable[[dict], tuple[str, str]],
) -> HttpResponse | None:
    """For a valid POSTed ``form``: run ``action`` (a ledger service call
    returning a success message and where to go), then redirect there. None
    to show the form again: not posted, invalid, or refused (the refusal is
    then the form's error)."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        message, url = action(form.cleaned_data)
    except LedgerError as exc:
        form.add_error(None, f"{exc.code}: {exc.detail}")
        return None
    model_admin.message_user(request, message, messages.SUCCESS)
    return HttpResponseRedirect(url)


def form_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    form: forms.Form,
    title: str,
    submit_label: str,
    intro: str = "",
) -> TemplateResponse:
    """The page of a form that changes the ledger through a ledger service."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "opts": model_admin.model._meta,
        "submit_label": submit_label,
        "intro": intro,
    }
    return TemplateResponse(request, "admin/ledger_core/ledgerentry/post.html", context)


class CaptureForm(forms.Form):
    amount = forms.IntegerField(
        required=False, max_value=-1, help_text="leave empty to capture all of it"
    )


class VoidForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


@admin.register(LedgerHold)
class LedgerHoldAdmin(ReadOnlyAdmin):
    """Holds, read-only; a manager captures or voids a pending one through the
    same services as the API."""

    list_display = [
        "id", "owner_id", "app", "operation", "amount", "current_status", "expires_at",
        "created_at", "created_by", "resolved_at", "entry_link",
    ]  # fmt: skip
    list_filter = ["status", AppFilter]
    search_fields = ["owner_id"]
    search_help_text = "Exact owner id."
    ordering = ["-id"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 100
    readonly_fields = [
        *(f.name for f in LedgerHold._meta.fields), "current_status", "entry_link", "resolve",
    ]  # fmt: skip

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(owner_id=term) if term else queryset), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The balance page links here with ?owner_id=...
        return lookup == "owner_id" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="status")
    def current_status(self, hold: LedgerHold) -> str:
        """The status as of now: a pending hold past its expiry is expired."""
        if hold.status == HoldStatus.PENDING and hold.expires_at <= timezone.now():
            return f"{HoldStatus.EXPIRED} (not yet released)"
        return hold.status

    @admin.display(description="entry")
    def entry_link(self, hold: LedgerHold) -> str:
        if hold.entry is None:
            return "-"
        url = reverse("admin:ledger_core_ledgerentry_change", args=[hold.entry])
        return format_html('<a href="{}">#{}</a>', url, hold.entry)

    @admin.display(description="Resolve")
    def resolve(self, hold: LedgerHold) -> str:
        """Capture and Void buttons for a pending hold."""
        if hold.status != HoldStatus.PENDING or hold.expires_at <= timezone.now():
            return "resolved"
        capture = reverse("admin:ledger_core_ledgerhold_capture", args=[hold.pk])
        void = reverse("admin:ledger_core_ledgerhold_void", args=[hold.pk])
        return format_html(
            '<a class="button" href="{}">Capture</a> <a class="button" href="{}">Void</a>',
            capture,
            void,
        )

    def get_urls(self) -> list:
        return [
            path(
                "<int:hold_id>/capture/",
                self.admin_site.admin_view(self.capture_view),
                name="ledger_core_ledgerhold_capture",
            ),
            path(
                "<int:hold_id>/void/",
                self.admin_site.admin_view(self.void_view),
                name="ledger_core_ledgerhold_void",
            ),
            *super().get_urls(),
        ]

    def _hold(self, request: HttpRequest, hold_id: int) -> LedgerHold:
        if not request.user.has_perm(POST_ANY_PERMISSION):
            raise PermissionDenied
        hold = LedgerHold.objects.filter(pk=hold_id).first()
        if hold is None:
            raise Http404
        return hold

    def capture_view(self, request: HttpRequest, hold_id: int) -> HttpResponse:
        """Capture a hold through ``hold_capture``."""
        hold = self._hold(request, hold_id)
        form = CaptureForm(request.POST if request.method == "POST" else None)

        def capture(data: dict) -> tuple[str, str]:
            entry = hold_capture(
                hold_id=hold.pk, app=hold.app, actor=Actor.for_user(request.user),
                amount=data["amount"],
            ).entry  # fmt: skip
            return (
                f"Hold #{hold.pk} captured by entry #{entry.pk} ({entry.amount:+d}), "
                f"balance now {entry.balance_after}.",
                reverse("admin:ledger_core_ledgerhold_change", args=[hold.pk]),
            )

        done = form_action(self, request, form, capture)
        if done is not None:
            return done
        title = f"Capture hold #{hold.pk}: {hold.operation} {hold.amount:+d} for {hold.owner_id}"
        intro = "A capture posts one entry of the hold's operation; the rest is released."
        return form_page(self, request, form, title, "Capture hold", intro)

    def void_view(self, request: HttpRequest, hold_id: int) -> HttpResponse:
        """Void a hold through ``hold_void``."""
        hold = self._hold(request, hold_id)
        form = VoidForm(request.POST if request.method == "POST" else None)

        def void(data: dict) -> tuple[str, str]:
            result = hold_void(
                hold_id=hold.pk, app=hold.app, actor=Actor.for_user(request.user),
                reason=data["reason"],
            )  # fmt: skip
            return (
                f"Hold #{hold.pk} is {result.hold.status}.",
                reverse("admin:ledger_core_ledgerhold_change", args=[hold.pk]),
            )

        done = form_action(self, request, form, void)
        if done is not None:
            return done
        title = f"Void hold #{hold.pk}: {hold.operation} {hold.amount:+d} for {hold.owner_id}"
        intro = "A void releases the hold's credits; nothing is posted."
        return form_page(self, request, form, title, "Void hold", intro)


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    """Credits that expire, one row per granting entry: what is left of each."""

    list_display = [
        "entry_link", "owner_id", "app", "amount", "remaining", "consumed", "expired",
        "expires_at",
    ]  # fmt: skip
    list_filter = [AppFilter]
    search_fields = ["owner_id"]
    search_help_text = "Exact owner id."
    ordering = ["owner_id", "expires_at", "entry"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 100

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(owner_id=term) if term else queryset), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The balance page links here with ?owner_id=...
        return lookup == "owner_id" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="entry", ordering="entry")
    def entry_link(self, lot: CreditLot) -> str:
        url = reverse("admin:ledger_core_ledgerentry_change", args=[lot.entry])
        return format_html('<a href="{}">#{}</a>', url, lot.entry)


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = [
        "owner_id", "balance", "held", "lot_credits", "version", "updated_at", "entries", "holds",
    ]  # fmt: skip
    search_fields = ["owner_id"]
    search_help_text = "Exact owner id."
    ordering = ["owner_id"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 100
    readonly_fields = [
        "owner_id", "balance", "held", "lot_credits", "version", "updated_at", "entries", "holds",
        "lots",
    ]  # fmt: skip

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(owner_id=term) if term else queryset), False

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        # The key is the owner id (text): one no owner can have (a NUL byte,
        # which PostgreSQL refuses in text) is a missing balance, not an error.
        if not is_valid_owner_id(object_id):
            return None
        return super().get_object(request, object_id, from_field)

    @admin.display(description="entries")
    def entries(self, obj: Balance) -> str:
        url = (
            reverse("admin:ledger_core_ledgerentry_changelist")
            + "?"
            + urlencode({"owner_id": obj.owner_id})
        )
        return format_html('<a href="{}">{} entries</a>', url, obj.version)

    @admin.display(description="holds")
    def holds(self, obj: Balance) -> str:
        url = (
            reverse("admin:ledger_core_ledgerhold_changelist")
            + "?"
            + urlencode({"owner_id": obj.owner_id})
        )
        return format_html('<a href="{}">holds</a>', url)

    @admin.display(description="credit lots (soonest expiry first)")
    def lots(self, obj: Balance) -> str:
        """The owner's open lots: what is left of each and when it expires."""
        open_lots = CreditLot.objects.filter(owner_id=obj.owner_id, remaining__gt=0).order_by(
            "expires_at", "entry"
        )[:20]
        rows = format_html_join(
            "",
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((lot.entry, lot.remaining, lot.amount, lot.expires_at) for lot in open_lots),
        )
        url = (
            reverse("admin:ledger_core_creditlot_changelist")
            + "?"
            + urlencode({"owner_id": obj.owner_id})
        )
        return format_html(
            "<table><tr><th>entry</th><th>remaining</th><th>granted</th><th>expires at</th></tr>"
            '{}</table><a href="{}">all lots</a>',
            rows,
            url,
        )


class WebhookSubscriptionForm(forms.ModelForm):
    """A subscription's URL and app get the API's rules as form errors (public
    addresses only, unless ``LEDGER_WEBHOOK_ALLOW_PRIVATE``; a registered app).
    ``resume_after`` moves its cursor to a position the feed gave; the cursor
    itself is not a form field, so saving a form opened before deliveries
    moved it does not move it back."""

    url = forms.URLField(max_length=500, assume_scheme="https")
    resume_after = forms.CharField(
        required=False, max_length=64,
        help_text="deliver the events after this position: an event's id or a page's `next` "
        "(0.0.0 is the feed's beginning). Empty: a new subscription starts at the feed's "
        "current end, an existing one keeps its cursor.",
    )  # fmt: skip

    class Meta:
        model = WebhookSubscription
        fields = ["url", "event_types", "app", "active"]

    def _checked(self, field: str, problem_of: Callable[[str], str | None]) -> str:
        value = self.cleaned_data[field]
        problem = problem_of(value)
        if problem is not None:
            raise forms.ValidationError(problem)
        return value

    def clean_url(self) -> str:
        return self._checked("url", destination_problem)

    def clean_app(self) -> str:
        return self._checked("app", app_problem)

    def clean_resume_after(self) -> str:
        if not self.cleaned_data["resume_after"]:
            return ""
        return self._checked("resume_after", cursor_problem)


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """Webhook subscriptions: their health at a glance. A new one gets its
    secret generated here and shown once; the secret is never displayed again,
    and the "new signing secrets" actions replace it (shown once, too): at
    once (a secret that leaked), or keeping the old one signing for a day
    beside the new (a scheduled rotation, which the receiver can follow
    without refusing a delivery)."""

    list_display = [
        "id", "url", "active", "app", "event_types", "cursor", "last_success_at",
        "failing_since", "last_error", "disabled_at",
    ]  # fmt: skip
    list_filter = ["active"]
    form = WebhookSubscriptionForm
    actions = ["ping", "renew_secret", "renew_secret_keeping_old"]
    fields = [
        "url", "event_types", "app", "active", "cursor", "resume_after", "attempts",
        "next_attempt_at", "failing_since", "last_error", "last_success_at", "disabled_at",
        "previous_secret_until", "created_at", "created_by",
    ]  # fmt: skip
    readonly_fields = [
        "cursor", "attempts", "next_attempt_at", "failing_since", "last_error",
        "last_success_at", "disabled_at", "previous_secret_until", "created_at", "created_by",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(POST_ANY_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(POST_ANY_PERMISSION)

    @admin.action(
        description="Try the selected subscriptions' URLs (a signed delivery with no events)",
        permissions=["change"],
    )
    def ping(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        actor = Actor.for_user(request.user)
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                error = subscription_ping(pk, actor=actor)
            except SubscriptionNotFound:
                continue  # deleted meanwhile
            if error is None:
                self.message_user(request, f"Webhook #{pk}: acknowledged.", messages.SUCCESS)
            else:
                self.message_user(request, f"Webhook #{pk}: {error}", messages.ERROR)

    @admin.action(
        description="Give the selected subscriptions new signing secrets at once (shown once)",
        permissions=["change"],
    )
    def renew_secret(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        self._renew_secrets(request, queryset, keep_old_seconds=0)

    @admin.action(
        description="Give the selected subscriptions new signing secrets, the old ones "
        "signing too for a day (shown once)",
        permissions=["change"],
    )
    def renew_secret_keeping_old(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> None:
        self._renew_secrets(request, queryset, keep_old_seconds=KEEP_OLD_SECRET_ADMIN)

    def _renew_secrets(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription], keep_old_seconds: int
    ) -> None:
        actor = Actor.for_user(request.user)
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                renewed = subscription_change(
                    pk, actor=actor, new_secret=True, keep_old_seconds=keep_old_seconds
                )
            except SubscriptionNotFound:
                continue  # deleted meanwhile
            until = renewed.previous_secret_until
            kept = f" (the old one signs too until {until:%Y-%m-%d %H:%M:%S %Z})" if until else ""
            self.message_user(
                request,
                f"Webhook #{pk}: its new signing secret, shown only now: {renewed.secret}{kept}",
                messages.WARNING,
            )

    def save_model(self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool):
        resume_after = form.cleaned_data["resume_after"]
        after = Cursor.parse(resume_after) if resume_after else None
        actor = Actor.for_user(request.user)
        if change:
            # Only what the form changed (and the cursor, if asked) is
            # written, after any delivery in flight (subscription_change).
            fields = {name: form.cleaned_data[name] for name in form.changed_data
                      if name != "resume_after"}  # fmt: skip
            try:
                subscription_change(obj.pk, actor=actor, after=after, **fields)
            except LedgerError as exc:
                raise PermissionDenied(exc.detail) from exc
            return
        try:
            created = subscription_create(
                url=obj.url, actor=actor, event_types=obj.event_types, app=obj.app, after=after,
            )  # fmt: skip
        except LedgerError as exc:
            raise PermissionDenied(exc.detail) from exc
        obj.pk, obj.secret = created.pk, created.secret
        self.message_user(
            request,
            f"Webhook #{created.pk} created. Its signing secret, shown only now: {created.secret}",
            messages.WARNING,
        )
