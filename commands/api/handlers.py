"""The one place errors become HTTP: JSON {"detail": "<sentence>", "code": "<code>"}.

Validation errors add the field errors DRF produced under "errors". Nothing here ever
puts a traceback, a private key or a secret into a response.
"""

import logging
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from commands.exceptions import (
    BodyTooLarge,
    HomelabError,
    InvalidRequest,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from commands.observability.logfilters import mark_logged

logger = logging.getLogger(__name__)

# SSH failures an admin fixes in the configuration (pin the host key, install our key,
# start sshd): expected, so one line each of ours (with the server and the execution), not
# Django's own request line. A changed host key may be a machine in the middle: an ERROR.
EXPECTED_SSH_CODES = frozenset({"host_key_unknown", "ssh_auth_failed", "ssh_connect_failed"})
ALARMING_SSH_CODES = frozenset({"host_key_mismatch"})

INVALID_FIELDS = "The request is invalid; see errors for each field."
JSON_BODY = "Send the body as a JSON object with `Content-Type: application/json`."


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def quota_headers(usage: Any) -> dict[str, str]:
    """X-RateLimit-* for what the caller has left after the quota step (quota.Usage): the
    limit per window, what remains, and whole seconds until one more frees (a delay, as
    Retry-After, not a clock time). None when the request never reached the quota."""
    if usage is None:
        return {}
    return {
        "X-RateLimit-Limit": str(usage.limit),
        "X-RateLimit-Remaining": str(usage.remaining),
        "X-RateLimit-Reset": str(math.ceil(usage.reset)),
    }


def as_domain_error(exc: Exception) -> HomelabError:
    """The domain error for what Django or DRF raise on a body they cannot take (the
    pipeline audits and raises it like any other refusal)."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return BodyTooLarge(
            f"The request body is over {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE); "
            "an execute request is a small JSON object."
        )
    if isinstance(exc, RecursionError):
        # json.loads recurses once per nesting level; no valid request is nested deeply.
        return InvalidRequest("JSON parse error - the body is nested too deeply.")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        # e.g. curl -d without -H 'Content-Type: application/json' sends a form.
        return UnsupportedMediaType(f"{exc.detail} {JSON_BODY}")
    if isinstance(exc, drf_exceptions.ValidationError):
        return InvalidRequest(describe(exc)[1], errors=exc.detail)
    if isinstance(exc, drf_exceptions.APIException):
        # A body that is not valid JSON (ParseError) is as invalid as one with a bad field.
        return InvalidRequest(describe(exc)[1])
    raise exc


class RefuseNulMiddleware:
    """400 for a NUL (%00) in the path or the query string, before any view sees it.

    PostgreSQL cannot store or compare text with NUL in it (psycopg raises), and no name,
    id or filter value ever contains one: refuse it the same way on every database.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        query = request.GET
        values = [key for key in query] + [v for key in query for v in query.getlist(key)]
        if "\x00" in request.path or any("\x00" in value for value in values):
            detail = "A NUL character (%00) is not allowed in a URL."
            if request.path.startswith("/api/"):
                return JsonResponse(error_body(detail, "invalid"), status=400)
            return HttpResponseBadRequest(detail, content_type="text/plain")
        return self.get_response(request)


def describe(exc: Exception) -> tuple[str, str]:
    """(code, detail) of a domain or DRF error: what the client sees and the audit keeps."""
    if isinstance(exc, HomelabError):
        return exc.code, exc.detail
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        summary = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in fields.items())
        return "invalid", summary
    if isinstance(exc, drf_exceptions.ParseError):
        # A body that is not valid JSON is as invalid as one with a bad field.
        return "invalid", str(exc.detail)
    if isinstance(exc, drf_exceptions.Throttled):
        return "throttled", str(exc.detail)
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        # e.g. curl -d without -H 'Content-Type: application/json' sends a form.
        return exc.default_code, f"{exc.detail} {JSON_BODY}"
    if isinstance(exc, drf_exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail if isinstance(exc.detail, str) else exc.default_detail
        return code, str(detail)
    return "server_error", "Internal server error."


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map domain errors and DRF's own to {"detail", "code"}; never leak a traceback."""
    if isinstance(exc, RequestDataTooBig):
        # Not a RecursionError: outside the execute view's parsing it is a bug, a 500.
        exc = as_domain_error(exc)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down, unreachable or cut the connection: the client may retry,
        # so a 503 rather than a 500 that reads like a bug. One line, not a traceback.
        logger.error("the database is not answering: %s", str(exc).strip())
        exc = ServiceUnavailable("The database (DATABASE_URL) is not answering; try again shortly.")
    if isinstance(exc, HomelabError):
        if exc.code in EXPECTED_SSH_CODES | ALARMING_SSH_CODES:
            log_expected(exc, context)
        elif getattr(exc, "logged", False) and context.get("request") is not None:
            mark_logged(context["request"]._request)  # said once, where it happened
        detail, extra = exc.detail, dict(exc.extra)
        if isinstance(exc, InvalidRequest) and exc.errors is not None:
            detail, extra["errors"] = INVALID_FIELDS, exc.errors
            if not_json(context.get("request")):
                detail = f"{detail} {JSON_BODY}"
        response = Response(error_body(detail, exc.code, **extra), status=int(exc.status_code))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response["Retry-After"] = str(int(retry_after))
        for name, value in quota_headers(exc.quota).items():
            response[name] = value
        return response

    # Django's own 404/403 become DRF's, so they get a code like every other error.
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        # An unexpected error: log it server-side, answer with a plain sentence.
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response(
            error_body(*reversed(describe(exc))),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code, detail = describe(exc)
    if isinstance(exc, drf_exceptions.ValidationError):
        detail, extra = INVALID_FIELDS, {"errors": exc.detail}
        if not_json(context.get("request")):
            detail = f"{detail} {JSON_BODY}"
    else:
        extra = {}
    response.data = error_body(detail, code, **extra)
    return response


def not_json(request: Any) -> bool:
    """Whether request is a POST whose body was not declared JSON (e.g. sent empty)."""
    if request is None or request.method != "POST":
        return False
    media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    return media_type != "application/json"


def log_expected(exc: HomelabError, context: dict[str, Any]) -> None:
    """One line for an SSH failure the admin fixes, instead of Django's own: a WARNING, or
    an ERROR for a changed host key."""
    from commands.models import Execution

    execution_id = exc.extra.get("execution_id")
    server = (
        Execution.objects.filter(pk=execution_id).values_list("server_name", flat=True).first()
        if execution_id is not None
        else None
    ) or getattr(context.get("view"), "kwargs", {}).get("pk", "?")
    # The detail is what the client reads: it names the fix, never a key path.
    level = logging.ERROR if exc.code in ALARMING_SSH_CODES else logging.WARNING
    logger.log(
        level, "%s on server %s (execution %s): %s", exc.code, server, execution_id, exc.detail
    )
    request = context.get("request")
    if request is not None:
        mark_logged(request._request)


def _api_or_page(status_code: int, code: str, detail: str, page_view):
    """A Django-level error view: JSON {"detail","code"} under /api/, Django's page elsewhere."""

    def view(request, exception=None):
        if request.path.startswith("/api/"):
            return JsonResponse(error_body(detail, code), status=status_code)
        return page_view(request) if exception is None else page_view(request, exception)

    return view


# Errors Django raises before DRF sees the request (an unknown URL, a bad Host header,
# a crash in middleware) keep the API's error shape too.
bad_request = _api_or_page(400, "bad_request", "Bad request.", defaults.bad_request)
permission_denied = _api_or_page(
    403, "permission_denied", "Permission denied.", defaults.permission_denied
)
page_not_found = _api_or_page(404, "not_found", "No such API endpoint.", defaults.page_not_found)
server_error = _api_or_page(500, "server_error", "Internal server error.", defaults.server_error)
