"""URL routes: the front door, the versioned API, its schema and docs, and the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from commands.web import apidocs, frontdoor

urlpatterns = [
    path("", frontdoor.index, name="index"),
    path("admin/", admin.site.urls),
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
