"""The front door at `/`: where the API docs and the admin are, and, for staff, a glance
at the servers, the rules and the last executions; and `/favicon.ico`, which browsers ask
for on every page (the admin's, the API docs') whatever the page links.

A plain Django page outside the API: DRF never sees it, so it is not in the OpenAPI
schema, and unknown paths still get the JSON 404 under /api/ (commands/api/handlers.py).
"""

import functools
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from commands.models import AllowedCommand, Execution, Server

RECENT_EXECUTIONS = 10
# Made by scripts/make_favicon.py; also served as a static file, which our pages link.
FAVICON = Path(__file__).resolve().parent.parent / "static" / "commands" / "favicon.ico"


def is_staff(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_active and user.is_staff)


# csrf_exempt: the page takes no writes at all, and without it a POST would get the CSRF
# 403 before require_safe's 405 could say so.
@csrf_exempt
@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """Links for everyone; counts and the last executions for logged-in staff only."""
    user = request.user
    context: dict = {"staff": is_staff(user)}
    if context["staff"]:
        context["servers"] = Server.objects.count()
        context["rules"] = AllowedCommand.objects.count()
        # Any staff login reads the audit trail through the API already (GET executions/).
        context["executions"] = list(
            Execution.objects.order_by("-created_at", "-id")[:RECENT_EXECUTIONS]
        )
    return render(request, "homelab/index.html", context)


@functools.cache
def favicon_bytes() -> bytes:
    return FAVICON.read_bytes()


@csrf_exempt
@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """The icon, from this origin (no CDN), cached by the browser for a day."""
    response = HttpResponse(favicon_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
