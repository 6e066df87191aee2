"""The user admin, with usernames checked like registration's and fixed once created.

A regular user's ledger owner id is their username: a new user's name must be a
valid owner id that is neither reserved nor the name of an existing ledger
(``ledger_site.services.username_problem``), and renaming a user would detach
them from their credits (and free the old name for somebody else).
"""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.models import Group
from rest_framework_simplejwt.token_blacklist.admin import (
    BlacklistedTokenAdmin,
    OutstandingTokenAdmin,
)
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from ledger_core.admin import SafeLookupsMixin

from .services import username_problem


class LedgerUserCreationForm(AdminUserCreationForm):
    def clean_username(self) -> str:
        username = super().clean_username()
        problem = username_problem(username) if username else None
        if problem is not None:
            code, message = problem
            raise forms.ValidationError(message, code=code)
        return username


class LedgerUserAdmin(SafeLookupsMixin, UserAdmin):
    add_form = LedgerUserCreationForm

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("username")
        return fields


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, LedgerUserAdmin)

# The libraries' own admins (groups, simplejwt's tokens) get the same
# NUL-safe changelists as the ledger's. Importing their admin modules above
# registers them first, whatever the order of INSTALLED_APPS.
for model, library_admin in (
    (Group, GroupAdmin),
    (OutstandingToken, OutstandingTokenAdmin),
    (BlacklistedToken, BlacklistedTokenAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, type(library_admin.__name__, (SafeLookupsMixin, library_admin), {}))
