"""OpenAPI description of the execute endpoint: every status, its body and an example."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from commands.serializers import (
    BadRequestErrorSerializer,
    ErrorSerializer,
    ExecuteRequestSerializer,
    ExecuteResultSerializer,
    ExecutionErrorSerializer,
)


def example(name: str, status: int, value: dict) -> OpenApiExample:
    return OpenApiExample(name, value=value, response_only=True, status_codes=[str(status)])


def error(status: int, code: str, detail: str, **extra) -> OpenApiExample:
    return example(code, status, {"detail": detail, "code": code, **extra})


execute_schema = extend_schema(
    request=ExecuteRequestSerializer,
    examples=[
        OpenApiExample(
            "restart a service",
            value={"command": "systemctl restart nginx", "action_type": "restart_service"},
            request_only=True,
        ),
        example(
            "ran",
            200,
            {
                "execution_id": 42,
                "exit_code": 0,
                "stdout": " 14:02:11 up 3 days,  2:01,  0 users,  load average: 0.01\n",
                "stderr": "",
                "duration_ms": 7,
                "stdout_truncated": False,
                "stderr_truncated": False,
            },
        ),
        error(
            400,
            "invalid",
            "The request is invalid; see errors for each field.",
            errors={"command": ["This field may not be blank."]},
        ),
        error(
            400,
            "not_whitelisted",
            "No enabled rule named 'reboot' is usable on server nas.",
            execution_id=43,
        ),
        error(
            400,
            "invalid_parameter",
            "Parameter 'service' of rule restart_service does not match its pattern.",
            execution_id=44,
        ),
        error(
            400,
            "server_disabled",
            "Server nas is disabled; enable it in the admin.",
            execution_id=45,
        ),
        error(401, "not_authenticated", "Authentication credentials were not provided."),
        error(401, "authentication_failed", "Invalid or revoked API key."),
        error(403, "permission_denied", "You do not have permission to perform this action."),
        error(404, "server_not_found", "No server with id '99'."),
        error(
            408,
            "timeout",
            "The command ran past its 30 s timeout and was stopped on the server.",
            execution_id=46,
            stdout="partial output\n",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
        ),
        error(429, "throttled", "Request was throttled. Expected available in 42 seconds."),
        error(503, "unavailable", "The rate-limit store (Redis, REDIS_URL) is not answering."),
        error(
            500,
            "host_key_unknown",
            "host key for nas (10.0.0.5:22) is not pinned; run `python manage.py trusthost "
            "nas` after checking the fingerprint",
            execution_id=47,
        ),
    ],
    parameters=[
        OpenApiParameter(
            "Retry-After",
            OpenApiTypes.INT,
            location=OpenApiParameter.HEADER,
            response=[429],
            description="Whole seconds until the next execution is allowed.",
        )
    ],
    responses={
        200: ExecuteResultSerializer,
        400: OpenApiResponse(
            BadRequestErrorSerializer,
            description="`invalid` (field errors), or `not_whitelisted`, `invalid_parameter`, "
            "`server_disabled` (with the audit row's execution_id).",
        ),
        401: OpenApiResponse(ErrorSerializer, description="No key, or a bad/revoked key."),
        403: OpenApiResponse(ErrorSerializer, description="`permission_denied`."),
        404: OpenApiResponse(ErrorSerializer, description="`server_not_found`."),
        408: OpenApiResponse(
            ExecutionErrorSerializer,
            description="`timeout`: the command ran past its timeout; the remote process was "
            "stopped. Carries the partial output.",
        ),
        429: OpenApiResponse(
            ErrorSerializer,
            description="`throttled`: over the per-key execution rate; see Retry-After.",
        ),
        503: OpenApiResponse(
            ErrorSerializer,
            description="`unavailable`: the rate-limit store (Redis) is not answering.",
        ),
        500: OpenApiResponse(
            ExecutionErrorSerializer,
            description="SSH failure: `ssh_connect_failed`, `ssh_auth_failed`, "
            "`host_key_mismatch`, `host_key_unknown`, `ssh_connection_lost`, `ssh_error`.",
        ),
    },
)
