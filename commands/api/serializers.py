"""Request and response shapes; drf-spectacular builds the schema from them."""

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from commands import results, services
from commands.models import AllowedCommand, Batch, BatchTarget, Execution, Server
from commands.requests import BatchRequest, ExecuteRequest


class ServerSerializer(serializers.ModelSerializer):
    """A server as clients see it: never a key path or key material."""

    host_key_pinned = serializers.SerializerMethodField()
    tags = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True, help_text="Its tags, sorted."
    )

    class Meta:
        model = Server
        fields = [
            "id",
            "name",
            "hostname",
            "port",
            "username",
            "enabled",
            "host_key_pinned",
            "tags",
        ]
        read_only_fields = fields

    def get_host_key_pinned(self, server: Server) -> bool:
        return bool(server.host_key)


class AllowedCommandSerializer(serializers.ModelSerializer):
    """A whitelist rule usable on a server."""

    class Meta:
        model = AllowedCommand
        fields = [
            "action_type",
            "description",
            "template",
            "parameters",
            "parameter_help",
            "timeout_seconds",
            "confirm",
        ]
        read_only_fields = fields


# "Execute": drf-spectacular adds "Request" to request bodies (COMPONENT_SPLIT_REQUEST),
# so the schema names it ExecuteRequest, not ExecuteRequestRequest. The fields and their
# checks are the pipeline's own (commands/requests.py), so the schema cannot drift.
@extend_schema_serializer(component_name="Execute")
class ExecuteRequestSerializer(ExecuteRequest):
    pass


class ExecuteResultSerializer(serializers.ModelSerializer):
    """The outcome of a command that ran; a non-zero exit code is still a 200."""

    execution_id = serializers.IntegerField(source="id", help_text="The audit row's id.")

    class Meta:
        model = Execution
        fields = ["execution_id", *results.RESULT_FIELDS]
        read_only_fields = fields


class ExecuteStartedSerializer(serializers.ModelSerializer):
    """A command started with wait=false: follow it by its id."""

    execution_id = serializers.IntegerField(source="id", help_text="The audit row's id.")
    url = serializers.SerializerMethodField(help_text="GET it for the status and output.")
    stream = serializers.SerializerMethodField(help_text="WebSocket path of its live output.")

    class Meta:
        model = Execution
        fields = ["execution_id", "status", "url", "stream"]
        read_only_fields = fields

    def get_url(self, execution: Execution) -> str:
        return f"/api/v1/executions/{execution.pk}/"

    def get_stream(self, execution: Execution) -> str:
        return f"/ws/v1/executions/{execution.pk}/"


class StreamTicketSerializer(serializers.Serializer):
    """A single-use ticket for a browser WebSocket, which cannot send headers."""

    ticket = serializers.CharField(help_text="Pass as ?ticket=; valid once, for 60 s.")
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid.")
    url = serializers.CharField(help_text="The WebSocket path with the ticket.")


class ExecutionSerializer(serializers.ModelSerializer):
    """One audit row: who ran what where, and how it ended; while it runs, its output so
    far (the beginning and the end, as the finished row will keep)."""

    def to_representation(self, execution: Execution) -> dict:
        data = super().to_representation(execution)
        if execution.status == Execution.Status.RUNNING:
            # The live store down: the row as stored still answers.
            data.update(services.snapshot(execution))
        return data

    class Meta:
        model = Execution
        fields = [
            "id",
            "server",
            "server_name",
            "api_key_name",
            "username",
            "client_ip",
            "action_type",
            "command",
            "argv",
            "status",
            "exit_code",
            *results.OUTPUT_FIELDS,
            "duration_ms",
            "error_code",
            "error_detail",
            "created_at",
            "finished_at",
            "batch",
        ]
        read_only_fields = fields


# --- batches (the bodies are built by commands/fleet/service.py; these document them) ----
@extend_schema_serializer(component_name="Batch")
class BatchRequestSerializer(BatchRequest):
    pass


class BatchResultSerializer(serializers.Serializer):
    """One target of a batch."""

    server = serializers.CharField(help_text="The server's name.")
    server_id = serializers.IntegerField(allow_null=True)
    execution_id = serializers.IntegerField(
        allow_null=True, help_text="The target's audit row; null when it never started."
    )
    status = serializers.ChoiceField(BatchTarget.Status.choices)
    exit_code = serializers.IntegerField(allow_null=True)
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    stdout_truncated = serializers.BooleanField()
    stderr_truncated = serializers.BooleanField()
    stdout_cut_bytes = serializers.IntegerField(
        help_text="How many bytes of stdout were cut from its middle (0: none)."
    )
    stderr_cut_bytes = serializers.IntegerField(
        help_text="How many bytes of stderr were cut from its middle (0: none)."
    )
    code = serializers.CharField(
        allow_null=True, help_text="The error code (e.g. ssh_connect_failed, skipped), or null."
    )


class BatchSummarySerializer(serializers.Serializer):
    """A batch without its results (GET batches/, the stream's `summary` frame)."""

    batch_id = serializers.IntegerField()
    status = serializers.ChoiceField(Batch.Status.choices)
    command = serializers.CharField()
    action_type = serializers.CharField()
    tag = serializers.CharField(allow_null=True)
    servers = serializers.ListField(child=serializers.CharField(), allow_null=True)
    max_concurrency = serializers.IntegerField(help_text="At most this many ran at once.")
    max_errors = serializers.IntegerField(
        allow_null=True, help_text="More failures than this stopped it; null: no limit."
    )
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="How many targets are in each status."
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class BatchSerializer(BatchSummarySerializer):
    """A batch with one result per target, sorted by server name."""

    results = BatchResultSerializer(many=True)


class BatchStartedSerializer(serializers.Serializer):
    batch_id = serializers.IntegerField()
    status = serializers.CharField()


class CheckStepSerializer(serializers.Serializer):
    """One step of a server check (commands/checks.py Step)."""

    name = serializers.CharField(
        help_text="Stable id, in order: tcp, host_key, key_file, auth, timeout, round_trip."
    )
    label = serializers.CharField(help_text='For humans, e.g. "Host key matches the pin".')
    ok = serializers.BooleanField(
        allow_null=True, help_text="null: not run, because an earlier step failed."
    )
    ms = serializers.FloatField(allow_null=True, help_text="How long the step took.")
    detail = serializers.CharField(
        allow_blank=True, help_text="What was found, e.g. `256 SHA256:... (ED25519)`, or the error."
    )
    fix = serializers.CharField(
        allow_blank=True, help_text="For the failed step: how to fix it; empty otherwise."
    )
    code = serializers.CharField(
        allow_null=True,
        help_text="For the failed step: a stable code, the one execute answers for the same "
        "fault (`ssh_connect_failed`, `host_key_unknown`, `host_key_mismatch`, "
        "`ssh_auth_failed`, `ssh_error`) or one of the check's own (`timeout_missing`, "
        "`round_trip_failed`, `check_error`); null for a step that passed or did not run.",
    )


class CheckReportSerializer(serializers.Serializer):
    """The result of POST servers/{id}/check: passed or not, the check itself ran."""

    server = serializers.CharField(help_text="The server's name.")
    ok = serializers.BooleanField(help_text="Whether every step passed.")
    code = serializers.CharField(
        allow_null=True, help_text="The failed step's `code`; null when every step passed."
    )
    steps = CheckStepSerializer(many=True, help_text="Every step, run or not, in order.")


# --- error bodies (documentation only: the exception handler produces them) ----------
class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="A sentence saying what went wrong and the fix.")
    code = serializers.CharField(help_text="A stable machine-readable code.")


class BadRequestErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="With code `invalid`: field name to its error messages (a list; for a "
        "list field, item index to its messages).",
    )
    execution_id = serializers.IntegerField(
        required=False,
        help_text="With a rejection by the whitelist, a disabled server or a missing "
        "confirmation: the audit row.",
    )


class ExecutionErrorSerializer(ErrorSerializer):
    """A 408, 409, 500 or 503 after the audit row was written; a timeout, a cancel and a
    lost connection carry the output so far. A 503 `unavailable` for a command that ran
    but whose result the database did not take carries the whole result (`status`,
    `exit_code`, ...)."""

    execution_id = serializers.IntegerField(help_text="The audit row of this attempt.")
    status = serializers.CharField(
        required=False, help_text="With a result not recorded: how the command ended."
    )
    exit_code = serializers.IntegerField(required=False, allow_null=True)
    duration_ms = serializers.IntegerField(required=False, allow_null=True)
    error_code = serializers.CharField(required=False, allow_blank=True)
    error_detail = serializers.CharField(required=False, allow_blank=True)
    stdout = serializers.CharField(required=False)
    stderr = serializers.CharField(required=False)
    stdout_truncated = serializers.BooleanField(required=False)
    stderr_truncated = serializers.BooleanField(required=False)
    stdout_cut_bytes = serializers.IntegerField(
        required=False, min_value=0, help_text="Bytes of stdout left out of `stdout` (0: none)."
    )
    stderr_cut_bytes = serializers.IntegerField(
        required=False, min_value=0, help_text="Bytes of stderr left out of `stderr` (0: none)."
    )
