"""The rows homelab keeps: servers, the whitelist, API keys and the audit trail."""

import logging
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import DatabaseError, connection, models
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from rest_framework_api_key.models import AbstractAPIKey

from commands import results, signals

logger = logging.getLogger(__name__)

# The largest id either database stores (a signed 64-bit integer): a bigger number would
# overflow inside SQLite or PostgreSQL, and no row can have it anyway.
MAX_ID = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_id(text: Any) -> int | None:
    """A row id written in ASCII digits, from 1 to MAX_ID; None for anything else
    (Python's int() would also take Arabic-Indic or fullwidth digits)."""
    text = str(text)
    if not (text.isascii() and text.isdecimal()):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


def storable(text: str) -> str:
    """text that every database stores: NUL (PostgreSQL refuses it) and lone surrogates
    (not encodable as UTF-8) become U+FFFD, as undecodable output does."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


def default_command_timeout() -> int:
    return settings.HOMELAB_COMMAND_TIMEOUT


def validate_not_all_digits(value: str) -> None:
    """A server name may stand where its id does in a URL, so it must never read as one."""
    if value.isascii() and value.isdecimal():
        raise ValidationError(
            "A server name cannot be all digits: in a URL it would read as a server id. "
            "Add a letter, e.g. srv-%(value)s.",
            code="all_digits",
            params={"value": value},
        )


def name_hint(value: str) -> str:
    """What to write instead of value, which is not a slug ("My NAS": my-nas), or ""."""
    suggestion = slugify(value)[:64].strip("-_")
    if suggestion and not (suggestion.isascii() and suggestion.isdecimal()):
        return suggestion
    return ""


def slug_error(value: str) -> ValidationError:
    """The refusal of a server name that is not a slug, suggesting one that is."""
    hint = name_hint(value)
    return ValidationError(
        "A server name is letters, digits, - and _ only (it stands in URLs in place of the "
        f"id){f', e.g. {hint}' if hint else ''}.",
        code="invalid",
    )


TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
TAG_MESSAGE = (
    "A tag is 1 to 32 lowercase letters, digits, - and _, starting with a letter or "
    "digit (e.g. pi, web, rack-2)."
)


class Tag(models.Model):
    """A label servers share, to name a group of them at once (a batch by tag, a filter)."""

    name = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(TAG_PATTERN, TAG_MESSAGE, code="invalid_tag")],
        help_text="e.g. pi, web, rack-2.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.clean_fields()
        super().save(*args, **kwargs)


class Server(models.Model):
    """A machine commands may be run on, reached over SSH with a pinned host key."""

    name = models.SlugField(
        max_length=64,
        unique=True,
        validators=[validate_not_all_digits],
        help_text="Short unique name (letters, digits, - and _; not only digits), used in "
        "URLs in place of the id and by the management commands (e.g. nas).",
    )
    hostname = models.CharField(
        max_length=255,
        help_text="DNS name or IP address the SSH connection goes to.",
    )
    port = models.PositiveIntegerField(
        default=22,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
    )
    username = models.CharField(
        max_length=64,
        default="root",
        help_text="Remote user the commands run as.",
    )
    use_sudo = models.BooleanField(
        default=False,
        verbose_name="use sudo",
        help_text="Send every command as `sudo -n -- COMMAND` (for a user other than root). "
        "The server's sudoers must let this user run the rules' programs without a "
        "password; see docs/security.md.",
    )
    key_file = models.CharField(
        max_length=1024,
        blank=True,
        verbose_name="private key file",
        help_text="Path on this host to the private key; empty uses HOMELAB_SSH_KEY_FILE.",
    )
    host_key = models.TextField(
        blank=True,
        verbose_name="pinned host key",
        help_text='The server\'s public host key, "TYPE BASE64"; pin it with '
        "`./manage.py trusthost NAME`.",
    )
    enabled = models.BooleanField(
        default=True,
        help_text="Disabled servers refuse every command.",
    )
    notes = models.TextField(
        blank=True,
    )
    tags = models.ManyToManyField(
        Tag,
        blank=True,
        related_name="servers",
        help_text="Labels to run a batch on, or to filter by (GET servers/?tag=pi).",
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
    )
    updated_at = models.DateTimeField(
        auto_now=True,
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            # The validators hold for save(); this holds for update() and raw SQL too.
            models.CheckConstraint(
                condition=Q(port__gte=1, port__lte=65535),
                name="server_port_1_to_65535",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # Validated on every save (admin, addserver, shell), like a whitelist rule: a name
        # that is not a slug, or reads as an id, would make URLs ambiguous. Uniqueness is
        # the database's constraint.
        self.clean_fields()
        super().save(*args, **kwargs)

    def clean_fields(self, exclude=None) -> None:
        """As Django's, with a name that is not a slug refused by a message that suggests
        one ("My NAS": my-nas). Replaced here, not as a validator, so no migration."""
        try:
            super().clean_fields(exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict({})
            named = errors.get("name", [])
            if any(getattr(error, "code", None) == "invalid" for error in named):
                errors["name"] = [
                    slug_error(self.name) if error.code == "invalid" else error for error in named
                ]
            raise ValidationError(errors) from None

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"


class AllowedCommandQuerySet(models.QuerySet):
    """Whitelist rules, filterable by where they may run."""

    def usable_on(self, server: Server | None) -> "AllowedCommandQuerySet":
        """The rules that may run on server: those for every server and those limited to
        it (enabled or not); None means no server. rules.find applies the same rule to one
        row (all_servers, or listed), the way an execute needs it."""
        if server is None:
            return self
        limited_to_it = AllowedCommand.servers.through.objects.filter(server_id=server.pk)
        return self.filter(
            Q(all_servers=True) | Q(pk__in=limited_to_it.values("allowedcommand_id"))
        )


class AllowedCommand(models.Model):
    """One whitelist rule: an action type and the exact command shape it may run."""

    action_type = models.SlugField(
        max_length=64,
        unique=True,
        help_text="Stable name clients send as action_type (e.g. restart_service).",
    )
    description = models.CharField(
        max_length=255,
        blank=True,
    )
    template = models.CharField(
        max_length=1024,
        help_text="Command split with POSIX shell rules; {name} fills one whole token, "
        "e.g. systemctl restart {service}.",
    )
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text='Parameter name to regular expression, e.g. {"service": "^[a-z0-9@._-]+$"}.',
    )
    parameter_help = models.JSONField(
        default=dict,
        blank=True,
        help_text="Parameter name to a short help text for clients, e.g. "
        '{"service": "a systemd unit, e.g. nginx"}; edited in the admin as parameter rows.',
    )
    template_tokens = models.JSONField(
        default=list,
        editable=False,
        help_text="The template split into tokens when saved.",
    )
    timeout_seconds = models.PositiveIntegerField(
        default=default_command_timeout,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
    )
    enabled = models.BooleanField(
        default=True,
    )
    all_servers = models.BooleanField(
        default=False,
        verbose_name="usable on every server",
        help_text="Usable on every server, including ones added later. Leave it off and "
        "select servers to limit the rule; with neither, the rule is usable nowhere.",
    )
    confirm = models.BooleanField(
        default=False,
        verbose_name="ask for confirmation",
        help_text="The rule changes the machine (upgrades, restarts, reboots): the console "
        "asks for the server's name before running it, runbatch asks y/N, and a browser "
        'session must send "confirm": true. API keys are not asked.',
    )
    servers = models.ManyToManyField(
        Server,
        blank=True,
        related_name="allowed_commands",
        help_text="Servers this rule is limited to. Deleting them leaves the rule usable "
        "nowhere, never everywhere.",
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
    )
    updated_at = models.DateTimeField(
        auto_now=True,
    )

    objects = AllowedCommandQuerySet.as_manager()

    class Meta:
        ordering = ["action_type"]
        verbose_name = "allowed command"
        constraints = [
            # A timeout of 0 would make every run a 500: refused by the database too.
            models.CheckConstraint(
                condition=Q(timeout_seconds__gte=1, timeout_seconds__lte=3600),
                name="allowedcommand_timeout_1_to_3600",
            ),
        ]

    def __str__(self) -> str:
        return self.action_type

    def save(self, *args, **kwargs) -> None:
        # A rule is validated on every save (admin, management command, shell), so an
        # unsafe rule, or one with an out-of-range timeout, can never reach the table.
        # template_tokens is derived by clean(), so it is not checked as given.
        self.clean_fields(exclude=["template_tokens"])
        self.clean()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from commands import whitelist

        self.template_tokens = whitelist.check_rule(self.template, self.parameters)
        help_texts = self.parameter_help
        if not isinstance(help_texts, dict) or not all(
            isinstance(text, str) for text in help_texts.values()
        ):
            raise ValidationError(
                {
                    "parameter_help": 'Give an object of parameter name to text, e.g. {"service": '
                    '"a systemd unit"}.'
                },
                code="invalid_parameter_help",
            )
        # Help for a parameter the rule no longer has (renamed by allowcommand) is dropped.
        self.parameter_help = {k: v for k, v in help_texts.items() if k in self.parameters}


ACTION_TYPE = re.compile(r"[-a-zA-Z0-9_]{1,64}")
# DRF's throttle rate syntax, as HOMELAB_EXECUTE_RATE takes it (homelab/env.py).
RATE = re.compile(r"[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)")
RATE_MESSAGE = "Give a rate such as 100/min: a number per s, min, hour or day."


def validate_action_types(value) -> None:
    """An API key's action types: a list of slugs, like AllowedCommand.action_type."""
    if not isinstance(value, list) or not all(
        isinstance(item, str) and ACTION_TYPE.fullmatch(item) for item in value
    ):
        raise ValidationError(
            'Give a list of action types (slugs), e.g. ["uptime", "disk_usage"].',
            code="invalid_action_types",
        )


class ApiKey(AbstractAPIKey):
    """A client credential: random, shown once, stored hashed, revocable."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="api_keys",
    )
    last_used_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
    )
    # "Every server" and "every action" are flags, not "none listed": a key limited to
    # servers that are later deleted must run on none, never on all (issue 10, item 2).
    all_servers = models.BooleanField(
        default=True,
        verbose_name="usable on every server",
        help_text="Sees and runs commands on every server, including ones added later. "
        "Turn it off and select servers to limit the key; with neither, it reaches no server.",
    )
    servers = models.ManyToManyField(
        Server,
        blank=True,
        related_name="api_keys",
        help_text="Servers this key is limited to (when not usable on every server). "
        "Deleting them leaves the key usable on no server, never on every one.",
    )
    all_actions = models.BooleanField(
        default=True,
        verbose_name="may run every action type",
        help_text="May run every whitelist rule. Turn it off and list action types to "
        "limit the key; with neither, it runs nothing.",
    )
    action_types = models.JSONField(
        default=list,
        blank=True,
        help_text='Action types this key is limited to, e.g. ["uptime", "disk_usage"] '
        "(when it may not run every action type).",
    )
    read_only = models.BooleanField(
        default=False,
        verbose_name="read-only",
        help_text="Lists servers, commands and executions, never executes or cancels.",
    )
    rate = models.CharField(
        max_length=32,
        blank=True,
        verbose_name="execution rate",
        help_text="This key's own quota, e.g. 100/min (periods: s, min, hour, day); empty: "
        "HOMELAB_EXECUTE_RATE. A batch counts one execution per server.",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def clean(self) -> None:
        # Checked here, not as a field validator, so no migration imports this module.
        super().clean()
        try:
            validate_action_types(self.action_types)
        except ValidationError as exc:
            raise ValidationError({"action_types": exc.messages}) from None
        if self.rate and not RATE.fullmatch(self.rate):
            raise ValidationError({"rate": RATE_MESSAGE})


class TransitionError(RuntimeError):
    """A lifecycle method was called on an execution in a state it cannot leave that way
    (a bug in the caller, never a client's doing)."""


class ExecutionQuerySet(models.QuerySet):
    def interrupt(self) -> int:
        """Close the running rows among these whose process stopped before finishing them."""
        return self.filter(status=Execution.Status.RUNNING).update(
            status=Execution.Status.INTERRUPTED,
            error_code="interrupted",
            error_detail=INTERRUPTED_DETAIL,
            finished_at=timezone.now(),
        )


INTERRUPTED_DETAIL = "The process running this command stopped before it finished."


class Execution(models.Model):
    """One attempt to run a command: written before SSH starts, completed after.

    The row owns its lifecycle. A new (unsaved) row is either refused, `reject()`, or
    started, `start()`: saved `running` before SSH. A running row ends exactly once, by
    `finish(result)`, `fail(...)`, `cancel()` or `interrupt()`; each checks that the
    transition is legal and closes the row only while the database still says `running`
    (another process, markinterrupted, may have closed it first). `start` and the ends
    send commands.signals' execution_started / execution_finished.
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMEOUT = "timeout"
        ERROR = "error"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    server = models.ForeignKey(
        Server,
        null=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    server_name = models.CharField(
        max_length=64,
        help_text="Copied so history survives deleting the server.",
    )
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    api_key_name = models.CharField(
        max_length=50,
        blank=True,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    username = models.CharField(
        max_length=150,
        blank=True,
    )
    client_ip = models.GenericIPAddressField(
        null=True,
    )
    action_type = models.CharField(
        max_length=64,
    )
    command = models.CharField(
        max_length=1024,
        help_text="The command as the client sent it (cut at 1024 characters).",
    )
    argv = models.JSONField(
        null=True,
        help_text="The exact argv sent to the server, when the command was accepted.",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.RUNNING,
    )
    exit_code = models.IntegerField(
        null=True,
    )
    stdout = models.TextField(
        blank=True,
    )
    stderr = models.TextField(
        blank=True,
    )
    stdout_truncated = models.BooleanField(
        default=False,
    )
    stderr_truncated = models.BooleanField(
        default=False,
    )
    stdout_cut_bytes = models.PositiveBigIntegerField(
        default=0,
        help_text="How many bytes of stdout were left out of `stdout` (0: none).",
    )
    stderr_cut_bytes = models.PositiveBigIntegerField(
        default=0,
        help_text="How many bytes of stderr were left out of `stderr` (0: none).",
    )
    duration_ms = models.PositiveIntegerField(
        null=True,
    )
    error_code = models.CharField(
        max_length=32,
        blank=True,
    )
    error_detail = models.TextField(
        blank=True,
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
        db_index=True,
    )
    finished_at = models.DateTimeField(
        null=True,
    )
    runner = models.CharField(
        max_length=128,
        blank=True,
        help_text="The process running the command, host:pid:start; markinterrupted "
        "closes a running row only once that process is gone.",
    )
    batch = models.ForeignKey(
        "Batch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
        help_text="The batch this execution is one target of, if any.",
    )
    count = models.PositiveIntegerField(
        default=1,
        help_text="How many refusals this row stands for: a key refused again (throttled, "
        "forbidden) within the rate window adds to its row (created_at the first, "
        "finished_at the last) instead of writing a new one.",
    )

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("execute_command", "Can execute and cancel commands")]
        indexes = [
            models.Index(fields=["server", "-created_at"], name="execution_server_recent"),
            models.Index(fields=["status"], name="execution_status"),
            models.Index(fields=["action_type"], name="execution_action_type"),
        ]

    def __str__(self) -> str:
        return f"{self.action_type} on {self.server_name} ({self.status})"

    # --- the lifecycle ----------------------------------------------------------------------
    FINAL_FIELDS = (
        "status",
        "finished_at",
        *results.OUTPUT_FIELDS,
        "duration_ms",
        "exit_code",
        "error_code",
        "error_detail",
    )

    def start(self, *, argv: list[str], runner: str) -> None:
        """Save a new row `running` with the exact argv sent, before SSH starts."""
        if self.pk is not None or self.status != self.Status.RUNNING:
            raise TransitionError(f"execution {self.pk} cannot start: it is {self.status}")
        self.argv = argv
        self.runner = runner
        self.save()
        signals.execution_started.send_robust(Execution, execution=self)

    def reject(self, code: str, detail: str) -> None:
        """Save a new row refused before anything reached a server."""
        if self.pk is not None:
            raise TransitionError(f"execution {self.pk} was saved already: it cannot be refused")
        self.status = self.Status.REJECTED
        self.error_code = code
        self.error_detail = detail
        # The refused input may carry a NUL or a lone surrogate: stored as U+FFFD.
        for field in ("server_name", "command", "action_type", "error_detail"):
            setattr(self, field, storable(getattr(self, field)))
        self.finished_at = timezone.now()
        self.save()
        if self.finished_at < self.created_at:
            # created_at (auto_now_add) is set inside save(), after finished_at: a refusal
            # ends the instant it is recorded.
            self.finished_at = self.created_at
            self.save(update_fields=["finished_at"])

    def finish(self, result: Any) -> bool:
        """The command ran to its end (any exit code): `succeeded` or `failed`."""
        status = self.Status.SUCCEEDED if result.exit_code == 0 else self.Status.FAILED
        return self._close(status, output=result, exit_code=result.exit_code)

    def fail(self, code: str, detail: str, *, output: Any = None, timeout: bool = False) -> bool:
        """The run failed (SSH, or `timeout` when it ran past its deadline); output is what
        it printed before that, if anything."""
        status = self.Status.TIMEOUT if timeout else self.Status.ERROR
        return self._close(status, output=output, code=code, detail=detail)

    def cancel(self, *, output: Any = None, code: str = "cancelled", detail: str = "") -> bool:
        """Stopped on a user's request; the remote process was stopped."""
        return self._close(self.Status.CANCELLED, output=output, code=code, detail=detail)

    def interrupt(self, *, output: Any = None, detail: str = INTERRUPTED_DETAIL) -> bool:
        """Stopped because the process running it shut down."""
        return self._close(
            self.Status.INTERRUPTED, output=output, code="interrupted", detail=detail
        )

    def _close(
        self,
        status: str,
        *,
        output: Any,
        exit_code: int | None = None,
        code: str = "",
        detail: str = "",
    ) -> bool:
        """End a running row: True if this call closed it, False if it was closed already
        (the row as stored is then loaded). The fields are set on this object even when
        the database cannot be written (DatabaseError, see write_end): the caller still
        has the result, and may retry the write."""
        if self.pk is None or self.status != self.Status.RUNNING:
            raise TransitionError(
                f"execution {self.pk} cannot become {status}: it is {self.status}"
            )
        self.status = status
        self.finished_at = timezone.now()
        for field, value in results.output_of(output).items():
            setattr(self, field, storable(value) if isinstance(value, str) else value)
        self.exit_code = exit_code
        self.duration_ms = getattr(output, "duration_ms", None)
        if self.duration_ms is None:
            elapsed = self.finished_at - self.created_at
            self.duration_ms = max(int(elapsed.total_seconds() * 1000), 0)
        self.error_code, self.error_detail = code, storable(detail)
        return self.write_end()

    def write_end(self) -> bool:
        """Write the end a lifecycle method set on this object, while the database still
        says `running`: True if this call closed the row, False if it was closed already
        (the row as stored is then loaded). DatabaseError when the database does not take
        it, after one retry on a fresh connection; calling it again retries
        (commands/engine/record.py does, for a while)."""
        values = {name: getattr(self, name) for name in self.FINAL_FIELDS}
        still_running = Execution.objects.filter(pk=self.pk, status=self.Status.RUNNING)
        try:
            closed = still_running.update(**values)
        except DatabaseError:
            # A thread's connection may have been cut while the command ran (a restart,
            # idle_session_timeout): once more, on a fresh one.
            if connection.in_atomic_block:
                raise
            connection.close()
            closed = still_running.update(**values)
        if not closed:
            self.refresh_from_db()
            return False
        signals.execution_finished.send_robust(Execution, execution=self)
        return True


class BatchQuerySet(models.QuerySet):
    def interrupt(self) -> int:
        """Close the running batches among these whose process stopped: the batch and its
        targets that never started become `interrupted` (their executions close on their
        own, as Execution rows)."""
        running = list(self.filter(status=Batch.Status.RUNNING).values_list("pk", flat=True))
        if not running:
            return 0
        BatchTarget.objects.filter(
            batch_id__in=running,
            status__in=[BatchTarget.Status.PENDING, BatchTarget.Status.RUNNING],
            execution__isnull=True,
        ).update(status=BatchTarget.Status.INTERRUPTED, error_code="interrupted")
        return Batch.objects.filter(pk__in=running, status=Batch.Status.RUNNING).update(
            status=Batch.Status.INTERRUPTED, finished_at=timezone.now()
        )


class Batch(models.Model):
    """One command on many servers: who asked, what, where, how (the fan-out options) and
    how it went. Each target is a BatchTarget; each that started is an Execution."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # every target succeeded
        FAILED = "failed"  # some target did not succeed
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"  # the process running it stopped

    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    api_key_name = models.CharField(
        max_length=50,
        blank=True,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    username = models.CharField(
        max_length=150,
        blank=True,
    )
    client_ip = models.GenericIPAddressField(
        null=True,
    )
    action_type = models.CharField(
        max_length=64,
    )
    command = models.CharField(
        max_length=1024,
    )
    tag = models.CharField(
        max_length=32,
        blank=True,
        help_text="The tag the targets were chosen by, if they were.",
    )
    requested = models.JSONField(
        default=list,
        blank=True,
        help_text="The servers as the request named them (ids or names), if it named them.",
    )
    max_concurrency = models.PositiveIntegerField(
        help_text="At most this many targets ran at once (from the request's number or %).",
    )
    max_errors = models.PositiveIntegerField(
        null=True,
        help_text="More targets than this ending without success stopped the batch; "
        "null: no limit.",
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text='The fan-out options as given, e.g. {"max_concurrency": "30%"}.',
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.RUNNING,
    )
    runner = models.CharField(
        max_length=128,
        blank=True,
        help_text="The process running the batch, host:pid:start (see Execution.runner).",
    )
    created_at = models.DateTimeField(
        auto_now_add=True,
        db_index=True,
    )
    finished_at = models.DateTimeField(
        null=True,
    )

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        indexes = [models.Index(fields=["status"], name="batch_status")]

    def __str__(self) -> str:
        return f"{self.action_type} on {self.targets.count()} servers ({self.status})"


class BatchTarget(models.Model):
    """One server of a batch, in start order. A target that never started (skipped,
    cancelled or refused before its turn) has no execution and `status` says how it ended;
    once started, its execution's status is the target's (`status` is then left as
    `running`: the execution row is the one truth, closed by its own lifecycle)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMEOUT = "timeout"
        ERROR = "error"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"
        SKIPPED = "skipped"

    batch = models.ForeignKey(
        Batch,
        on_delete=models.CASCADE,
        related_name="targets",
    )
    position = models.PositiveIntegerField(
        help_text="Start order: by server name.",
    )
    server = models.ForeignKey(
        Server,
        null=True,
        on_delete=models.SET_NULL,
        related_name="batch_targets",
    )
    server_name = models.CharField(
        max_length=64,
    )
    execution = models.OneToOneField(
        Execution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batch_target",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.PENDING,
    )
    error_code = models.CharField(
        max_length=32,
        blank=True,
        help_text="Why it did not succeed, when no execution says it (skipped, cancelled).",
    )

    class Meta:
        ordering = ["batch", "position"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "position"], name="batchtarget_position"),
        ]

    def __str__(self) -> str:
        return f"{self.server_name} ({self.status})"
