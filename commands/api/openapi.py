"""OpenAPI description of the execute endpoint: every status, its body and an example."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from commands.api.serializers import (
    BadRequestErrorSerializer,
    CheckReportSerializer,
    ErrorSerializer,
    ExecuteRequestSerializer,
    ExecuteResultSerializer,
    ExecuteStartedSerializer,
    ExecutionErrorSerializer,
    ExecutionSerializer,
    StreamTicketSerializer,
)


def example(name: str, status: int, value: dict) -> OpenApiExample:
    return OpenApiExample(name, value=value, response_only=True, status_codes=[str(status)])


def error(status: int, code: str, detail: str, **extra) -> OpenApiExample:
    return example(code, status, {"detail": detail, "code": code, **extra})


def quota_headers(statuses: list[int]) -> list[OpenApiParameter]:
    """X-RateLimit-* (commands/api/handlers.py), sent once a request got past the quota."""
    described = {
        "X-RateLimit-Limit": "Executions this API key (or session user) may make per window "
        "(its own rate, or HOMELAB_EXECUTE_RATE).",
        "X-RateLimit-Remaining": "How many of them are left now, this request counted.",
        "X-RateLimit-Reset": "Whole seconds until one more is available (the oldest counted "
        "leaves the sliding window); 0 when none is counted. A delay, like Retry-After, "
        "not a clock time.",
    }
    return [
        OpenApiParameter(
            name, OpenApiTypes.INT, location=OpenApiParameter.HEADER, response=statuses,
            description=description,
        )
        for name, description in described.items()
    ]  # fmt: skip


execute_schema = extend_schema(
    request=ExecuteRequestSerializer,
    examples=[
        OpenApiExample(
            # Harmless on purpose: "Try it out" in /api/docs, or a fuzzer, really runs it.
            "uptime",
            value={"command": "uptime", "action_type": "uptime"},
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
                "stdout_cut_bytes": 0,
                "stderr_cut_bytes": 0,
            },
        ),
        example(
            "ran, output cut",
            200,
            {
                "execution_id": 51,
                "exit_code": 0,
                # At most HOMELAB_OUTPUT_LIMIT bytes: its first and its last half, nothing
                # between them; the field says how much was left out.
                "stdout": "Reading package lists...\n... 0 upgraded, 0 newly installed.\n",
                "stderr": "",
                "duration_ms": 5211,
                "stdout_truncated": True,
                "stderr_truncated": False,
                "stdout_cut_bytes": 183302,
                "stderr_cut_bytes": 0,
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
        error(
            400,
            "confirmation_required",
            "Rule apply_updates changes the machine, so it asks for confirmation before it "
            'runs on nas: send "confirm": true once the user has confirmed (the admin '
            "console asks for the server's name first). API keys are not asked.",
            execution_id=51,
        ),
        error(401, "not_authenticated", "Authentication credentials were not provided."),
        error(401, "authentication_failed", "Invalid or revoked API key."),
        error(403, "permission_denied", "You do not have permission to perform this action."),
        error(
            403,
            "key_scope",
            "API key 'backup-script' is limited to servers nas; it may not run commands on "
            "'web'. Use a key for that server, or widen this one in the admin.",
        ),
        error(404, "server_not_found", "No server with id '99'."),
        error(
            415,
            "unsupported_media_type",
            'Unsupported media type "application/x-www-form-urlencoded" in request. Send '
            "the body as a JSON object with `Content-Type: application/json`.",
        ),
        error(
            408,
            "timeout",
            "The command ran past its 30 s timeout and was stopped on the server.",
            execution_id=46,
            stdout="partial output\n",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
            stdout_cut_bytes=0,
            stderr_cut_bytes=0,
        ),
        example(
            "started (wait: false)",
            202,
            {
                "execution_id": 48,
                "status": "running",
                "url": "/api/v1/executions/48/",
                "stream": "/ws/v1/executions/48/",
            },
        ),
        error(
            409,
            "cancelled",
            "The execution was cancelled while it ran; the remote process was stopped.",
            execution_id=49,
            stdout="partial output\n",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
            stdout_cut_bytes=0,
            stderr_cut_bytes=0,
        ),
        error(429, "throttled", "Request was throttled. Expected available in 42 seconds."),
        error(503, "unavailable", "The rate-limit store (Redis, REDIS_URL) is not answering."),
        error(
            503,
            "busy",
            "All 64 runner slots of this process are busy (HOMELAB_MAX_RUNNING); nothing "
            "was run, try again shortly.",
            execution_id=50,
        ),
        error(
            424,
            "host_key_unknown",
            "host key for nas (10.0.0.5:22) is not pinned; run `./manage.py trusthost "
            "nas` after checking the fingerprint",
            execution_id=47,
        ),
        error(
            500,
            "ssh_connect_failed",
            "could not connect to nas (10.0.0.5:22): Connection refused; check the address, "
            "the port and that sshd is running",
            execution_id=51,
        ),
    ],
    parameters=[
        OpenApiParameter(
            "Retry-After",
            OpenApiTypes.INT,
            location=OpenApiParameter.HEADER,
            response=[429, 503],
            description="Whole seconds until the next execution is allowed.",
        ),
        OpenApiParameter(
            "Location",
            OpenApiTypes.STR,
            location=OpenApiParameter.HEADER,
            response=[202],
            description="The started execution, /api/v1/executions/{id}/.",
        ),
        # Not on refusals before the quota step (400, 401, 403, 404, 415): they use none.
        *quota_headers([200, 202, 408, 409, 424, 429, 500, 503]),
    ],
    responses={
        200: ExecuteResultSerializer,
        202: OpenApiResponse(
            ExecuteStartedSerializer,
            description='With `"wait": false`: the command has started; follow it with GET '
            "executions/{id}/ or the WebSocket ws/v1/executions/{id}/ (docs/streaming.md).",
        ),
        409: OpenApiResponse(
            ExecutionErrorSerializer,
            description="`cancelled`: the execution was cancelled while this call waited; "
            "carries the output up to the cancel.",
        ),
        400: OpenApiResponse(
            BadRequestErrorSerializer,
            description="`invalid` (field errors), or `not_whitelisted`, `invalid_parameter`, "
            "`server_disabled` (with the audit row's execution_id); `confirmation_required`: a "
            'logged-in session asked for a rule flagged `confirm` without `"confirm": true` '
            "(audited; API keys are never asked).",
        ),
        401: OpenApiResponse(ErrorSerializer, description="No key, or a bad/revoked key."),
        403: OpenApiResponse(
            ErrorSerializer,
            description="`permission_denied`; `key_scope`: the API key is limited to other "
            "servers or action types, or is read-only (audited; uses no quota). A key limited "
            "to servers gets `key_scope` for any other server, existing or not.",
        ),
        404: OpenApiResponse(ErrorSerializer, description="`server_not_found`."),
        415: OpenApiResponse(
            ErrorSerializer,
            description="`unsupported_media_type`: the body was not sent as "
            "`Content-Type: application/json` (e.g. curl -d without -H).",
        ),
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
            ExecutionErrorSerializer,
            description="`unavailable`: the rate-limit store (Redis) is not answering; or "
            "the command ran but the database did not take its result within "
            "HOMELAB_RECORD_RETRY_SECONDS (the body carries the result: `status`, "
            "`exit_code`, `stdout`, ...); `busy`: every runner slot stayed taken (see "
            "Retry-After); `interrupted`: the service shut down while the command ran (it "
            "was stopped on the server).",
        ),
        424: OpenApiResponse(
            ExecutionErrorSerializer,
            description="Fix the server record: its SSH set-up failed before anything ran. "
            "`host_key_unknown` (no host key pinned), `host_key_mismatch` (the server "
            "presented another key), `ssh_auth_failed` (our key was refused, or the key file "
            "is missing, unreadable or has a passphrase). Retrying as is cannot help.",
        ),
        500: OpenApiResponse(
            ExecutionErrorSerializer,
            description="SSH transport failure: `ssh_connect_failed` (not reachable, sshd "
            "down), `ssh_connection_lost` (cut while the command ran), `ssh_error`.",
        ),
    },
)


cancel_schema = extend_schema(
    request=None,
    responses={
        200: OpenApiResponse(
            ExecutionSerializer,
            description="Cancelled: the remote process was stopped; the row is `cancelled` "
            "(or already ended otherwise in the meantime).",
        ),
        202: OpenApiResponse(
            ExecutionSerializer,
            description="The cancel was sent but the process running the command has not "
            "confirmed it within 5 s; GET the row again.",
        ),
        401: OpenApiResponse(ErrorSerializer, description="No key, or a bad/revoked key."),
        403: OpenApiResponse(
            ErrorSerializer,
            description="`permission_denied`: an API key may cancel what it started (or its "
            "owner holds commands.execute_command); a session user needs that permission, "
            "even for its own; `key_scope`: a read-only API key.",
        ),
        404: OpenApiResponse(ErrorSerializer, description="`not_found`: no such execution."),
        409: OpenApiResponse(
            ErrorSerializer,
            description="`not_running`: the execution has already ended. Also when its "
            "command has ended but the database has not taken its result (the row still "
            "says running): the detail says how it ended and that the write is retried.",
        ),
    },
    examples=[error(409, "not_running", "Execution 42 is not running (it is succeeded).")],
)

stream_ticket_schema = extend_schema(
    request=None,
    responses={
        201: StreamTicketSerializer,
        401: OpenApiResponse(ErrorSerializer, description="No key, or a bad/revoked key."),
        403: OpenApiResponse(ErrorSerializer, description="`permission_denied`."),
        404: OpenApiResponse(ErrorSerializer, description="`not_found`: no such execution."),
    },
)


CHECK_PASSED = {
    "server": "nas",
    "ok": True,
    "code": None,
    "steps": [
        {"name": "tcp", "label": "TCP reachable", "ok": True, "ms": 0.4,
         "detail": "10.0.0.5:22 accepted the connection", "fix": "", "code": None},
        {"name": "host_key", "label": "Host key matches the pin", "ok": True, "ms": 9.1,
         "detail": "256 SHA256:GU6TL7m2vqOmhP2pJ7FfcPR2zCdMK03u1OjkqZDNeW0 (ED25519)",
         "fix": "", "code": None},
        {"name": "key_file", "label": "Private key usable", "ok": True, "ms": 0.6,
         "detail": "<key file>: public half 256 SHA256:1Ckq7ys1yG7FkPoUMYaoUAbKl2nSF6k3hZ"
         "OdKjN0vZA (ED25519)", "fix": "", "code": None},
        {"name": "auth", "label": "Public-key login accepted", "ok": True, "ms": 5.2,
         "detail": "logged in as root with 256 SHA256:1Ckq7ys1yG7FkPoUMYaoUAbKl2nSF6k3hZOdK"
         "jN0vZA (ED25519)", "fix": "", "code": None},
        {"name": "timeout", "label": "`timeout` (coreutils) present", "ok": True, "ms": 4.8,
         "detail": "/usr/bin/timeout", "fix": "", "code": None},
        {"name": "round_trip", "label": "No-op round trip", "ok": True, "ms": 3.9,
         "detail": "`true` exited 0", "fix": "", "code": None},
    ],
}  # fmt: skip
CHECK_FAILED = {
    "server": "nas",
    "ok": False,
    "code": "ssh_connect_failed",
    "steps": [
        {"name": "tcp", "label": "TCP reachable", "ok": False, "ms": 0.3,
         "detail": "10.0.0.5:2222: Connection refused",
         "fix": "Is sshd running on 10.0.0.5:2222? Check the hostname and port on the "
         "server's page, and any firewall.", "code": "ssh_connect_failed"},
        *[{"name": name, "label": label, "ok": None, "ms": None, "detail": "", "fix": "",
           "code": None}
          for name, label in [("host_key", "Host key matches the pin"),
                              ("key_file", "Private key usable"),
                              ("auth", "Public-key login accepted"),
                              ("timeout", "`timeout` (coreutils) present"),
                              ("round_trip", "No-op round trip")]],
    ],
}  # fmt: skip

check_schema = extend_schema(
    request=None,
    examples=[
        example("passed", 200, CHECK_PASSED),
        example("failed at tcp", 200, CHECK_FAILED),
        error(400, "server_disabled", "Server web is disabled; enable it in the admin."),
        error(401, "not_authenticated", "Authentication credentials were not provided."),
        error(
            403,
            "permission_denied",
            "Your user may read but not run, cancel or check: that takes the "
            'commands.execute_command permission ("Can execute and cancel commands"). Ask an '
            "admin to grant it to your user or one of its groups in the admin's Users page.",
        ),
        error(
            403,
            "key_scope",
            "API key 'backup-script' is limited to servers nas; it may not check 'web'. Use "
            "a key for that server, or widen this one in the admin.",
        ),
        error(404, "server_not_found", "No server with id or name '99'."),
        error(429, "throttled", "Request was throttled. Expected available in 42 seconds."),
        error(503, "unavailable", "The rate-limit store (Redis, REDIS_URL) is not answering."),
    ],
    parameters=[
        OpenApiParameter(
            "Retry-After",
            OpenApiTypes.INT,
            location=OpenApiParameter.HEADER,
            response=[429],
            description="Whole seconds until the next check or execution is allowed.",
        ),
        *quota_headers([200, 429]),
    ],
    responses={
        200: OpenApiResponse(
            CheckReportSerializer,
            description="The check ran, passed or not (`ok`): each step with its time, what "
            "it found and, for the one that failed, how to fix it. It uses a fresh SSH "
            "connection, closed at the end; the private key's path shows as `<key file>`.",
        ),
        400: OpenApiResponse(
            ErrorSerializer,
            description="`server_disabled`: the server is switched off, so the API does not "
            "log in to it (`./manage.py checkserver` and the admin still check it).",
        ),
        401: OpenApiResponse(ErrorSerializer, description="No key, or a bad/revoked key."),
        403: OpenApiResponse(
            ErrorSerializer,
            description="`permission_denied`: a session user needs commands.execute_command; "
            "`key_scope`: a read-only API key, or one limited to other servers (for any "
            "other server, existing or not).",
        ),
        404: OpenApiResponse(ErrorSerializer, description="`server_not_found`."),
        429: OpenApiResponse(
            ErrorSerializer,
            description="`throttled`: a check counts against the per-key execution rate; "
            "see Retry-After.",
        ),
        503: OpenApiResponse(
            ErrorSerializer,
            description="`unavailable`: the rate-limit store (Redis) is not answering.",
        ),
    },
)
