from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from ledger_core.api.events import (
    EventFeedView,
    WebhookDetailView,
    WebhookListView,
    WebhookPingView,
    WebhookSecretView,
)

from . import accounts, health, views
from .logins import login_rate_limited

handler400 = views.bad_request
handler404 = views.not_found

auth_patterns = [
    path("register/", accounts.RegisterView.as_view(), name="register"),
    path("token/", accounts.TokenView.as_view(), name="token"),
    path("token/refresh/", accounts.RefreshView.as_view(), name="token-refresh"),
    path("logout/", accounts.LogoutView.as_view(), name="logout"),
    path("password/", accounts.PasswordChangeView.as_view(), name="password"),
    path("password/reset/", accounts.PasswordResetView.as_view(), name="password-reset"),
    path("email/", accounts.EmailChangeView.as_view(), name="email"),
    path("email/verify/", accounts.EmailVerifyView.as_view(), name="email-verify"),
    path(
        "password/reset/confirm/",
        accounts.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("me/", accounts.MeView.as_view(), name="me"),
]

urlpatterns = [
    path("", views.index, name="index"),
    path("api/", views.ApiRootView.as_view(), name="api-root"),
    # Login forms, rate limited like /api/auth/token/ (ledger_site.logins).
    path("admin/login/", login_rate_limited(admin.site.login)),
    path(
        "api/auth/session/login/",
        login_rate_limited(LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    path("admin/", admin.site.urls),
    path("api/auth/", include((auth_patterns, "auth"))),
    # Session login for the browsable API (DRF's templates expect this namespace
    # at the top level).
    path("api/auth/session/", include("rest_framework.urls", namespace="rest_framework")),
    path("api/content/", include("content_app.urls")),
    path("api/rewards/", include("rewards_app.urls")),
    path("api/events/", EventFeedView.as_view(), name="events"),
    path("api/webhooks/", WebhookListView.as_view(), name="webhooks"),
    path("api/webhooks/<int:subscription_id>/", WebhookDetailView.as_view(), name="webhook"),
    path(
        "api/webhooks/<int:subscription_id>/secret/",
        WebhookSecretView.as_view(),
        name="webhook-secret",
    ),
    path(
        "api/webhooks/<int:subscription_id>/ping/", WebhookPingView.as_view(), name="webhook-ping"
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="ledger_site/redoc.html"),
        name="redoc",
    ),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", views.metrics, name="prometheus-django-metrics"),
]
