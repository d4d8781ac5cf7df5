"""The one domain error family and the one place it becomes HTTP.

Every error a client sees is JSON {"detail": "<sentence>", "code": "<stable code>"};
validation errors add the field errors DRF produced under "errors". Nothing here ever
puts a traceback, a private key or a secret into a response.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class HomelabError(Exception):
    """Base of every domain error: a stable code, an HTTP status, a human detail."""

    code = "error"
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_detail = "The request failed."

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.default_detail
        # Extra JSON-safe fields for the response body (e.g. execution_id, output).
        self.extra = extra
        super().__init__(self.detail)


# --- whitelist --------------------------------------------------------------------------
class CommandRejected(HomelabError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "rejected"


class NotWhitelisted(CommandRejected):
    code = "not_whitelisted"
    default_detail = "The command is not in the whitelist."


class InvalidParameter(CommandRejected):
    code = "invalid_parameter"
    default_detail = "A parameter of the command does not match its pattern."


class ServerDisabled(CommandRejected):
    code = "server_disabled"
    default_detail = "The server is disabled."


class ServerNotFound(HomelabError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "server_not_found"
    default_detail = "Server not found."


# --- SSH ----------------------------------------------------------------------------------
class SSHError(HomelabError):
    """Anything that went wrong on the SSH side; the detail says what to fix."""

    code = "ssh_error"
    default_detail = "The SSH session failed."


class ConnectFailed(SSHError):
    code = "ssh_connect_failed"
    default_detail = "Could not connect to the server."


class AuthFailed(SSHError):
    code = "ssh_auth_failed"
    default_detail = "The server refused our SSH key."


class HostKeyMismatch(SSHError):
    code = "host_key_mismatch"
    default_detail = "The server's host key does not match the pinned key."


class HostKeyUnknown(SSHError):
    code = "host_key_unknown"
    default_detail = "The server's host key is not pinned."


class ConnectionLost(SSHError):
    code = "ssh_connection_lost"
    default_detail = "The SSH connection was lost while the command ran."


class CommandTimeout(SSHError):
    status_code = status.HTTP_408_REQUEST_TIMEOUT
    code = "timeout"
    default_detail = "Command execution timeout."


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map domain errors and DRF's own to {"detail", "code"}; never leak a traceback."""
    if isinstance(exc, HomelabError):
        return Response(error_body(exc.detail, exc.code, **exc.extra), status=exc.status_code)

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
            error_body("Internal server error.", "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = error_body(
            "The request is invalid; see errors for each field.",
            "invalid",
            errors=exc.detail,
        )
    elif isinstance(exc, drf_exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.default_detail)
        if isinstance(exc, drf_exceptions.Throttled):
            code = "throttled"
        response.data = error_body(str(detail), code)
    return response
