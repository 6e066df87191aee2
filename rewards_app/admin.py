from django.contrib import admin

from ledger_core.admin import SafeLookupsMixin

from .models import Referral


@admin.register(Referral)
class ReferralAdmin(SafeLookupsMixin, admin.ModelAdmin):
    list_display = ["id", "referrer", "referred", "bonus_entry_id", "created_by", "created_at"]
    list_select_related = ["referrer", "referred"]
    search_fields = ["referrer__username", "referred__username"]
    date_hierarchy = "created_at"

    # Referrals are created only through the referrals endpoint, with their bonus.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
