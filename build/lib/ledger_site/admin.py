"""The user admin, with usernames fixed once created.

A regular user's ledger owner id is their username: renaming a user would
detach them from their credits (and free the old name for somebody else).
"""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin


class LedgerUserAdmin(UserAdmin):
    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("username")
        return fields


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, LedgerUserAdmin)
