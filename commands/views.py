"""API views: thin. Validation lives in serializers, the work in services."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from commands import audit, checks, clientip, openapi, scopes, services, streaming
from commands.exceptions import HomelabError, ServerDisabled, ServerNotFound, ServiceUnavailable
from commands.filters import ExecutionFilter
from commands.handlers import as_api_error
from commands.models import AllowedCommand, ApiKey, Execution, Server
from commands.permissions import EXECUTE_PERMISSIONS, check_key_may_check
from commands.serializers import (
    AllowedCommandSerializer,
    CheckReportSerializer,
    ExecuteRequestSerializer,
    ExecuteResultSerializer,
    ExecuteStartedSerializer,
    ExecutionSerializer,
    ServerSerializer,
    StreamTicketSerializer,
)
from commands.throttling import ExecuteRateThrottle


def key_of(request: Request) -> ApiKey | None:
    """The API key the request was authenticated by, if any (not a session login)."""
    return request.auth if isinstance(request.auth, ApiKey) else None


def caller(request: Request) -> dict:
    """Who is asking, for the audit row. X-Forwarded-For counts only from a trusted proxy."""
    return {
        "api_key": key_of(request),
        "user": request.user,
        "client_ip": clientip.from_meta(request.META),
    }


def body_or_none(request: Request) -> dict | None:
    """The parsed body, or None for an unparseable, unsupported or too large one (whose
    attempt is audited all the same)."""
    try:
        return request.data
    except (exceptions.APIException, RequestDataTooBig):
        return None


# A server is named in a URL by its id or by its unique name (HomelabCmd uses names).
SERVER_REF = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, description="The server's id, or its name (e.g. nas)."
)


@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("name", str, description="Only the server with this name.")]
    ),
    retrieve=extend_schema(parameters=[SERVER_REF]),
    commands=extend_schema(parameters=[SERVER_REF]),
    execute=extend_schema(parameters=[SERVER_REF]),
    check=extend_schema(parameters=[SERVER_REF]),
)
class ServerViewSet(viewsets.ReadOnlyModelViewSet):
    """Servers commands can be run on."""

    queryset = Server.objects.all()
    serializer_class = ServerSerializer
    throttle_scope: str | None = None  # set per action (execute)

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list" and "name" in self.request.query_params:
            queryset = queryset.filter(name=self.request.query_params["name"])
        # A scoped key sees only the servers it may use: others are as if missing.
        return scopes.filter_servers(queryset, key_of(self.request))

    def get_object(self) -> Server:
        """The server the URL names: all digits is its id, anything else its name (a name
        is never all digits, see Server.name)."""
        ref = str(self.kwargs.get("pk", ""))
        lookup = {"pk": ref} if ref.isascii() and ref.isdecimal() else {"name": ref}
        server = self.get_queryset().filter(**lookup).first()
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
        # A logged-in user without the right to execute is a known identity: audit it.
        if self.action == "execute" and request.user and request.user.is_authenticated:
            self.audit_refusal(request, exceptions.PermissionDenied(message, code))
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
        server = None
        try:
            server = self.server_in_scope(key_of(request))
            body = ExecuteRequestSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            # Before the quota: a request this key may never make does not use it up.
            scopes.check_execute(
                key_of(request),
                server,
                body.validated_data["action_type"],
                server_ref=str(self.kwargs.get("pk", "")),
            )
            super().check_throttles(request)
        except (exceptions.APIException, HomelabError, RequestDataTooBig, RecursionError) as exc:
            # A body over DATA_UPLOAD_MAX_MEMORY_SIZE or JSON nested too deep for the parser
            # is refused (413, 400) and audited like any other bad request.
            exc = as_api_error(exc)
            self.audit_refusal(request, exc, server)
            raise exc from None
        execution = services.execute_command(
            server=server, **body.validated_data, **caller(request)
        )
        if not body.validated_data["wait"]:
            started = ExecuteStartedSerializer(execution).data
            return Response(started, status=202, headers={"Location": started["url"]})
        return Response(ExecuteResultSerializer(execution).data)

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
        server = self.server_in_scope(key_of(request))
        check_key_may_check(key_of(request), server, server_ref=str(self.kwargs.get("pk", "")))
        if not server.enabled:
            # As execute: an API client does not log in to a server an admin switched off.
            raise ServerDisabled(f"Server {server.name} is disabled; enable it in the admin.")
        # A check logs in over SSH like an execution: it uses the same per-key quota.
        super().check_throttles(request)
        report = checks.check_server(server, hide_paths=True)
        return Response(CheckReportSerializer(report).data)

    def server_in_scope(self, key: ApiKey | None) -> Server | None:
        """The server to execute on. For a server-limited key, None for any server outside
        its scope, existing or not: both answer 403 key_scope (audited as `unknown:REF`),
        so the answer never tells a key whether a server it may not use exists."""
        try:
            return self.get_object()
        except ServerNotFound:
            if scopes.limits_servers(key):
                return None
            raise

    def audit_refusal(self, request: Request, exc: Exception, server: Server | None = None) -> None:
        """Audit a request refused before the whitelist was consulted (commands/audit.py)."""
        audit.record_refused_request(
            exc,
            server=server,
            server_ref=str(self.kwargs.get("pk", "")),
            data=body_or_none(request),
            **caller(request),
        )


class ExecutionViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first."""

    serializer_class = ExecutionSerializer
    queryset = Execution.objects.all()
    # The filters, their validation (400 `invalid`) and their schema: commands/filters.py.
    filter_backends = [DjangoFilterBackend]
    filterset_class = ExecutionFilter

    def get_queryset(self):
        # A key limited to servers reads only their history (and its own refusals).
        return scopes.filter_executions(super().get_queryset(), key_of(self.request))

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
        who = caller(request)
        try:
            ticket = streaming.issue_ticket(execution, api_key=who["api_key"], user=who["user"])
        except Exception:
            raise ServiceUnavailable(
                "The ticket store (the cache; Redis when REDIS_URL is set) is not answering; "
                "try again shortly."
            ) from None
        body = {
            "ticket": ticket,
            "expires_in": streaming.TICKET_SECONDS,
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
