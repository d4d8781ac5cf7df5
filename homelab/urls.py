"""URL routes: the front door, the versioned API, its schema and docs, the admin, and what
monitors read (metrics, liveness, readiness)."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from commands.api import schema  # noqa: F401  (the API key's OpenAPI security scheme)
from commands.web import apidocs, frontdoor, observability

urlpatterns = [
    path("", frontdoor.index, name="index"),
    path("favicon.ico", frontdoor.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("metrics", observability.MetricsView.as_view(), name="metrics"),
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("api/v1/", include("commands.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema")),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="homelab/redoc.html"),
        name="redoc",
    ),
    # ReDoc's own script, without its CDN logo (commands/web/apidocs.py).
    path("api/redoc/redoc.standalone.js", apidocs.redoc_bundle, name="redoc-bundle"),
]

handler400 = "commands.api.handlers.bad_request"
handler403 = "commands.api.handlers.permission_denied"
handler404 = "commands.api.handlers.page_not_found"
handler500 = "commands.api.handlers.server_error"
