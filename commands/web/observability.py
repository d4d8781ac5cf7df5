"""What a monitor reads: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz` (readiness).

Outside the versioned API and its schema: they are for Prometheus, Docker, Kubernetes and
Uptime Kuma, not for API clients. `/healthz` and `/readyz` take no credentials (a probe has
none); `/metrics` takes any API key (a read-only one is enough) or a staff login.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from commands.models import ApiKey
from commands.observability import metrics, readiness
from commands.scopes import may_read

METRICS_CREDENTIALS = (
    "An API key (a read-only one is enough) or a staff login is required to read the "
    "metrics; send it as `Authorization: Api-Key <key>`."
)


class MayReadMetrics(BasePermission):
    """Any valid API key, whatever its scope, or an active staff session."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, ApiKey) or may_read(request.user)


class AnyAccept(BaseContentNegotiation):
    """The metrics are text whatever Accept says; an error is JSON (the only renderer)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(exclude=True)
class MetricsView(APIView):
    """GET /metrics: the Prometheus text format, for the whole service."""

    permission_classes = [MayReadMetrics]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AnyAccept
    throttle_classes: list = []

    def permission_denied(self, request: Request, message=None, code=None) -> None:
        # A session without staff is no credential for a scraper either: 401, like none.
        raise exceptions.NotAuthenticated(METRICS_CREDENTIALS)

    def get(self, request: Request) -> HttpResponse:
        if not settings.HOMELAB_METRICS:
            raise Http404("Metrics are off (HOMELAB_METRICS=0).")
        body, content_type = metrics.render()
        return HttpResponse(body, content_type=content_type)


# csrf_exempt: no writes here, and a POST should get require_safe's 405, not CSRF's 403.
@csrf_exempt
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the process serves: no credentials, no database, no Redis."""
    return JsonResponse({"status": "ok"})


@csrf_exempt
@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, with REDIS_URL) answer in time; 503 naming those
    that do not."""
    ready, checks = await readiness.report()
    if ready:
        return JsonResponse({"status": "ok", "checks": checks})
    failing = [name for name, result in checks.items() if result["status"] != "ok"]
    body = {
        "status": "fail",
        "checks": checks,
        "detail": f"Not ready: {', '.join(failing)} not answering; see checks.",
        "code": "unavailable",
    }
    return JsonResponse(body, status=503)
