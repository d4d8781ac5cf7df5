"""API views: thin. Each builds the Caller and hands the request to one service."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from commands import audit, checks, quota, scopes, services
from commands.api import clientip, openapi
from commands.api.filters import ExecutionFilter, ServerFilter
from commands.api.handlers import as_domain_error, quota_headers
from commands.api.permissions import EXECUTE_PERMISSIONS
from commands.api.serializers import (
    AllowedCommandSerializer,
    CheckReportSerializer,
    ExecuteStartedSerializer,
    ExecutionSerializer,
    ServerSerializer,
    StreamTicketSerializer,
)
from commands.engine.framelog import execution_log
from commands.exceptions import PermissionDenied, ServerDisabled, ServerNotFound, ServiceUnavailable
from commands.live.tickets import TICKET_SECONDS, issue_ticket
from commands.models import AllowedCommand, ApiKey, Execution, Server, parse_id
from commands.quota import ExecuteRateThrottle
from commands.requests import Caller
from commands.results import result_of


def key_of(request: Request) -> ApiKey | None:
    """The API key the request was authenticated by, if any (not a session login)."""
    return request.auth if isinstance(request.auth, ApiKey) else None


def caller_of(request: Request) -> Caller:
    """Who is asking. X-Forwarded-For counts only from a trusted proxy (clientip.py)."""
    return Caller(key_of(request), request.user, clientip.from_meta(request.META))


def read_body(request: Request):
    """The parsed JSON body, or the domain error saying why it cannot be read."""
    try:
        return request.data
    except (exceptions.APIException, RequestDataTooBig, RecursionError) as exc:
        raise as_domain_error(exc) from None


def body_or_none(request: Request) -> dict | None:
    """The parsed body, or None for an unparseable, unsupported or too large one (whose
    attempt is audited all the same)."""
    try:
        return request.data
    except (exceptions.APIException, RequestDataTooBig, RecursionError):
        return None


# A server is named in a URL by its id or by its unique name (HomelabCmd uses names).
SERVER_REF = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, description="The server's id, or its name (e.g. nas)."
)


@extend_schema_view(
    retrieve=extend_schema(parameters=[SERVER_REF]),
    commands=extend_schema(parameters=[SERVER_REF]),
    execute=extend_schema(parameters=[SERVER_REF]),
    check=extend_schema(parameters=[SERVER_REF]),
)
class ServerViewSet(viewsets.ReadOnlyModelViewSet):
    """Servers commands can be run on."""

    queryset = Server.objects.prefetch_related("tags")
    serializer_class = ServerSerializer
    throttle_scope: str | None = None  # set per action (execute)
    # ?name= and ?tag= (repeat it: servers with every tag) on the list: api/filters.py.
    filter_backends = [DjangoFilterBackend]
    filterset_class = ServerFilter

    def get_queryset(self):
        # A scoped key sees only the servers it may use: others are as if missing.
        return scopes.filter_servers(super().get_queryset(), key_of(self.request))

    def filter_queryset(self, queryset):
        # The filters are the list's: a server's own URL names it whatever the query says.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_object(self) -> Server:
        """The server the URL names, by id or name (services.find_server). For a
        server-limited key, a server outside its scope is as if missing here."""
        ref = str(self.kwargs.get("pk", ""))
        server = services.find_server(ref, Caller(key_of(self.request)))
        if server is None:
            raise ServerNotFound(f"No server with id or name {ref!r}.")
        self.check_object_permissions(self.request, server)
        return server

    def check_throttles(self, request: Request) -> None:
        # Only `execute` is throttled, and it checks the quota itself once it knows the
        # request is a well-formed POST aimed at a real server: nothing else (an OPTIONS,
        # a 405, a 404, a bad body) uses up the quota.
        return

    @extend_schema(responses=AllowedCommandSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="commands", pagination_class=None)
    def commands(self, request: Request, pk: str | None = None) -> Response:
        """Whitelist rules usable on this server."""
        server = self.get_object()
        rules = AllowedCommand.objects.usable_on(server).filter(enabled=True)
        rules = scopes.filter_rules(rules, key_of(request))
        return Response(AllowedCommandSerializer(rules, many=True).data)

    def permission_denied(self, request: Request, message=None, code=None) -> None:
        # A logged-in user without the right to execute is a known identity: audit it
        # (DRF refuses here, before the view and its pipeline run).
        if self.action == "execute" and request.user and request.user.is_authenticated:
            audit.record_refusal(
                PermissionDenied(str(message or PermissionDenied.default_detail)),
                caller=caller_of(request),
                server=None,
                server_ref=str(self.kwargs.get("pk", "")),
                data=body_or_none(request),
            )
        super().permission_denied(request, message=message, code=code)

    @openapi.execute_schema
    @action(
        detail=True,
        methods=["post"],
        url_path="commands/execute",
        throttle_classes=[ExecuteRateThrottle],
        throttle_scope="command-execute",
        # A session user also needs commands.execute_command (refusal audited above).
        permission_classes=EXECUTE_PERMISSIONS,
        # JSON only: a form (curl -d without a Content-Type) is a 415 saying so, not
        # "This field is required" for fields that are in the body.
        parser_classes=[JSONParser],
    )
    def execute(self, request: Request, pk: str | None = None) -> Response:
        """Run one whitelisted command on this server and return its result."""
        execution = services.request_execution(
            caller=caller_of(request), server_ref=str(pk), body=lambda: read_body(request)
        )
        headers = quota_headers(getattr(execution, "quota", None))
        if execution.status == Execution.Status.RUNNING:  # wait: false
            started = ExecuteStartedSerializer(execution).data
            return Response(started, status=202, headers={"Location": started["url"], **headers})
        return Response(result_of(execution), headers=headers)

    @openapi.check_schema
    @action(
        detail=True,
        methods=["post"],
        url_path="check",
        throttle_classes=[ExecuteRateThrottle],
        throttle_scope="command-execute",
        permission_classes=EXECUTE_PERMISSIONS,
    )
    def check(self, request: Request, pk: str | None = None) -> Response:
        """Check step by step that homelab can reach, trust, log in to and run on it."""
        who = caller_of(request)
        server = self.server_in_scope(who)
        scopes.check_acts_on(who.api_key, server, server_ref=str(pk), verb="check")
        if not server.enabled:
            # As execute: an API client does not log in to a server an admin switched off.
            raise ServerDisabled(f"Server {server.name} is disabled; enable it in the admin.")
        # A check logs in over SSH like an execution: it uses the same per-key quota.
        usage = quota.take(who)
        report = checks.check_server(server, hide_paths=True)
        return Response(CheckReportSerializer(report).data, headers=quota_headers(usage))

    def server_in_scope(self, who: Caller) -> Server | None:
        """The server to act on. For a server-limited key, None for any server outside its
        scope, existing or not: both answer 403 key_scope, so the answer never tells a key
        whether a server it may not use exists."""
        return services.find_server(str(self.kwargs.get("pk", "")), who)


class ExecutionViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first."""

    serializer_class = ExecutionSerializer
    queryset = Execution.objects.all()
    # The filters, their validation (400 `invalid`) and their schema: commands/api/filters.py.
    filter_backends = [DjangoFilterBackend]
    filterset_class = ExecutionFilter

    def get_queryset(self):
        # A key limited to servers reads only their history (and its own refusals).
        return scopes.filter_executions(super().get_queryset(), key_of(self.request))

    def get_object(self) -> Execution:
        """The execution the URL names by its id in ASCII digits (models.parse_id), as server
        refs and the WebSocket read it: int() alone would take an Arabic-Indic or a
        fullwidth 1 (%D9%A1, %EF%BC%91) for execution 1, and overflow past MAX_ID."""
        pk = parse_id(self.kwargs.get("pk", ""))
        execution = None if pk is None else self.get_queryset().filter(pk=pk).first()
        if execution is None:
            raise exceptions.NotFound("No execution with that id.")
        self.check_object_permissions(self.request, execution)
        return execution

    @openapi.cancel_schema
    # Any session user needs commands.execute_command to cancel, even one who started it.
    @action(detail=True, methods=["post"], permission_classes=EXECUTE_PERMISSIONS)
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop a running execution on its server, from whichever worker runs it."""
        execution = self.get_object()
        scopes.check_cancel(key_of(request))
        if not may_cancel(request, execution):
            raise exceptions.PermissionDenied(
                "Only the key or user that started an execution, or a user with the "
                "commands.execute_command permission, may cancel it."
            )
        execution = services.cancel_execution(execution)
        done = execution.status != Execution.Status.RUNNING
        return Response(ExecutionSerializer(execution).data, status=200 if done else 202)

    @openapi.stream_ticket_schema
    @action(detail=True, methods=["post"], url_path="stream-ticket")
    def stream_ticket(self, request: Request, pk: str | None = None) -> Response:
        """A single-use, 60 s ticket to stream this execution from a browser WebSocket."""
        execution = self.get_object()
        try:
            ticket = issue_ticket(execution_log(execution.pk), caller_of(request))
        except Exception:
            raise ServiceUnavailable(
                "The ticket store (the cache; Redis when REDIS_URL is set) is not answering; "
                "try again shortly."
            ) from None
        body = {
            "ticket": ticket,
            "expires_in": TICKET_SECONDS,
            "url": f"/ws/v1/executions/{execution.pk}/?ticket={ticket}",
        }
        return Response(StreamTicketSerializer(body).data, status=201)


def may_cancel(request: Request, execution: Execution) -> bool:
    """The key or session user that started it, or a user with the execute permission
    (a session user got here only with that permission: CanExecute)."""
    if isinstance(request.auth, ApiKey):
        if execution.api_key_id == request.auth.pk:
            return True
    elif execution.api_key_id is None and execution.user_id == request.user.pk:
        return True
    return request.user.is_authenticated and request.user.has_perm("commands.execute_command")
