from django.contrib import admin

from ledger_core.admin import SafeLookupsMixin

from .models import ContentItem


@admin.register(ContentItem)
class ContentItemAdmin(SafeLookupsMixin, admin.ModelAdmin):
    list_display = ["id", "title", "owner", "payment_entry_id", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["title", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = ["payment_entry_id", "nonce", "created_at"]
    date_hierarchy = "created_at"

    # Items are paid for when created, so they are created only through the API.
    def has_add_permission(self, request):
        return False
