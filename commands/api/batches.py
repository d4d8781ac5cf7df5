"""The fleet's API: POST batches/ (one command on many servers), its list, its body, cancel
and a stream ticket. Thin, like views.py: the work is commands/fleet/service.py."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from commands import audit, scopes
from commands.api.filters import BatchFilter
from commands.api.openapi import error, example
from commands.api.permissions import EXECUTE_PERMISSIONS
from commands.api.serializers import (
    BadRequestErrorSerializer,
    BatchRequestSerializer,
    BatchSerializer,
    BatchStartedSerializer,
    BatchSummarySerializer,
    ErrorSerializer,
    StreamTicketSerializer,
)
from commands.api.views import caller_of, key_of, read_body
from commands.engine.framelog import batch_log
from commands.exceptions import PermissionDenied, ServiceUnavailable
from commands.fleet import service as fleet
from commands.live.tickets import TICKET_SECONDS, issue_ticket
from commands.models import ApiKey, Batch

THRESHOLD_RULE = """\
Runs one whitelisted command on many servers: those listed in `servers` (ids or names),
or every server with the `tag` (exactly one of the two).

**Order and fan-out.** Targets start in server-name order. At most `max_concurrency` run at
once: a number, or `"N%"` of the targets rounded up (`"30%"` of 10 is 3). Default 10.

**Stopping.** `max_errors` counts the targets that ended without success (failed, timeout,
error, rejected, cancelled, interrupted). Once that count *exceeds* `max_errors`, no further
target starts; the targets already running finish; the rest end as `skipped`, with no SSH
login. `max_errors` is a number or `"N%"` of the targets rounded down (`"10%"` of 25 is 2:
the third failure stops the batch). Without it there is no limit. So `max_concurrency: 1,
max_errors: 0` is a rolling update that stops at the first failure.

**Per target.** Each target is whitelisted and audited on its own: a rule limited to other
servers gives that target `rejected` with code `not_whitelisted`, a disabled server
`rejected` with `server_disabled`; neither logs in, and the other targets still run.

**Quota.** Every target counts as one execution against the key's rate, all at once or not
at all (429 `throttled`). A batch larger than the whole rate could never run: 400
`batch_over_rate`.

`wait: true` (the default) answers 200 with the batch once every target has ended;
`wait: false` answers 202 at once; follow it at `GET batches/{id}/` or the WebSocket
`/ws/v1/batches/{id}/`.
"""

BATCH_EXAMPLE = {
    "batch_id": 7,
    "status": "failed",
    "command": "uptime",
    "action_type": "uptime",
    "tag": "pi",
    "servers": None,
    "max_concurrency": 10,
    "max_errors": None,
    "counts": {"succeeded": 1, "failed": 0, "error": 1, "skipped": 0},
    "created_at": "2026-12-02T10:00:00Z",
    "finished_at": "2026-12-02T10:00:01Z",
    "results": [
        {"server": "pi-kitchen", "server_id": 3, "execution_id": 41, "status": "succeeded",
         "exit_code": 0, "stdout": " 10:00:01 up 3 days,  load average: 0.01\n", "stderr": "",
         "duration_ms": 9, "stdout_truncated": False, "stderr_truncated": False, "code": None},
        {"server": "pi-shed", "server_id": 4, "execution_id": 42, "status": "error",
         "exit_code": None, "stdout": "", "stderr": "", "duration_ms": 10003,
         "stdout_truncated": False, "stderr_truncated": False, "code": "ssh_connect_failed"},
    ],
}  # fmt: skip

create_schema = extend_schema(
    summary="Run one command on many servers",
    description=THRESHOLD_RULE,
    request=BatchRequestSerializer,
    examples=[
        example("ran on a tag (wait: true)", 200, BATCH_EXAMPLE),
        example("started (wait: false)", 202, {"batch_id": 8, "status": "running"}),
        error(
            400,
            "invalid",
            "The request is invalid; see errors for each field.",
            errors={"non_field_errors": ['Give exactly one of "servers" and "tag".']},
        ),
        error(400, "no_servers", "No server has the tag 'attic'; tag servers in the admin."),
        error(
            400,
            "too_many_servers",
            "The batch targets 150 servers; at most 100 "
            "(HOMELAB_BATCH_MAX_SERVERS) may be targeted at once.",
        ),
        error(
            400,
            "batch_over_rate",
            "The batch targets 12 servers, more than the 10 "
            "executions per 60 s this caller may make; it could never run.",
        ),
        error(
            403,
            "key_scope",
            "API key 'pi-script' is limited to servers pi-kitchen; the "
            "batch names a server outside them.",
        ),
        error(404, "server_not_found", "No server with id or name 'nass'."),
        error(429, "throttled", "Request was throttled. Expected available in 42 seconds."),
    ],
    responses={
        200: BatchSerializer,
        202: OpenApiResponse(BatchStartedSerializer, description="With `wait: false`."),
        400: OpenApiResponse(
            BadRequestErrorSerializer,
            description="`invalid`, `not_whitelisted`, `invalid_parameter`, `no_servers`, "
            "`too_many_servers`, `batch_over_rate`: nothing ran.",
        ),
        403: OpenApiResponse(
            ErrorSerializer, description="`permission_denied`; `key_scope` (never naming it)."
        ),
        404: OpenApiResponse(ErrorSerializer, description="`server_not_found`, naming it."),
        429: OpenApiResponse(ErrorSerializer, description="`throttled`: see Retry-After."),
        503: OpenApiResponse(ErrorSerializer, description="`unavailable`."),
    },
    parameters=[
        OpenApiParameter(
            "Retry-After", OpenApiTypes.INT, location=OpenApiParameter.HEADER, response=[429]
        ),
        OpenApiParameter(
            "Location", OpenApiTypes.STR, location=OpenApiParameter.HEADER, response=[202]
        ),
    ],
)


class BatchViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Batches, newest first: one command on many servers (docs/fleet.md)."""

    queryset = Batch.objects.all()
    serializer_class = BatchSummarySerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = BatchFilter
    # JSON only: a form body is a 415 saying so (as for execute).
    parser_classes = [JSONParser]

    def get_queryset(self):
        # A key limited to servers reads only the batches it started.
        return fleet.visible_batches(super().get_queryset(), caller_of(self.request))

    def get_permissions(self):
        if self.action in ("create", "cancel"):
            return [permission() for permission in EXECUTE_PERMISSIONS]
        return super().get_permissions()

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([fleet.summary(batch) for batch in page])

    @extend_schema(responses=BatchSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """The batch with every target's result so far (a running one's output so far)."""
        batch = self.get_object()
        return Response({**fleet.summary(batch), "results": fleet.results(batch)})

    @create_schema
    def create(self, request: Request) -> Response:
        batch = fleet.request_batch(caller=caller_of(request), body=lambda: read_body(request))
        if batch.status == Batch.Status.RUNNING:
            location = f"/api/v1/batches/{batch.pk}/"
            started = {"batch_id": batch.pk, "status": batch.status}
            return Response(started, status=202, headers={"Location": location})
        return Response({**fleet.summary(batch), "results": fleet.results(batch)})

    def permission_denied(self, request: Request, message=None, code=None) -> None:
        # A logged-in user without the right to run is a known identity: audit it.
        if self.action == "create" and request.user and request.user.is_authenticated:
            audit.record_refusal(
                PermissionDenied(str(message or PermissionDenied.default_detail)),
                caller=caller_of(request),
                server=None,
                server_ref="",
                data=None,
                where="batch",
            )
        super().permission_denied(request, message=message, code=code)

    @extend_schema(
        request=None,
        responses={
            200: BatchSerializer,
            403: OpenApiResponse(ErrorSerializer, description="`permission_denied`, `key_scope`."),
            409: OpenApiResponse(ErrorSerializer, description="`not_running`: it has ended."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop a running batch from any worker: its running targets are stopped on their
        servers, the ones not started end `cancelled`."""
        batch = self.get_object()
        scopes.check_cancel(key_of(request))
        if not may_cancel(request, batch):
            raise PermissionDenied(
                "Only the key or user that started a batch, or a user with the "
                "commands.execute_command permission, may cancel it."
            )
        batch = fleet.cancel_batch(batch)
        return Response({**fleet.summary(batch), "results": fleet.results(batch)})

    @extend_schema(request=None, responses={201: StreamTicketSerializer})
    @action(detail=True, methods=["post"], url_path="stream-ticket")
    def stream_ticket(self, request: Request, pk: str | None = None) -> Response:
        """A single-use, 60 s ticket to stream this batch from a browser WebSocket."""
        batch = self.get_object()
        try:
            ticket = issue_ticket(batch_log(batch.pk), caller_of(request))
        except Exception:
            raise ServiceUnavailable(
                "The ticket store (the cache; Redis when REDIS_URL is set) is not answering; "
                "try again shortly."
            ) from None
        body = {
            "ticket": ticket,
            "expires_in": TICKET_SECONDS,
            "url": f"/ws/v1/batches/{batch.pk}/?ticket={ticket}",
        }
        return Response(StreamTicketSerializer(body).data, status=201)


def may_cancel(request: Request, batch: Batch) -> bool:
    """The key or session user that started it, or a user with the execute permission."""
    if isinstance(request.auth, ApiKey):
        if batch.api_key_id == request.auth.pk:
            return True
    elif batch.api_key_id is None and batch.user_id == request.user.pk:
        return True
    return scopes.may_execute(request.user)
