"""The one domain error family: a stable code, an HTTP status and a sentence each.

Plain Python (no Django, no DRF) so `commands/ssh/` can raise these without pulling
in the web stack; `commands/api/handlers.py` is the one place they become HTTP.
"""

from http import HTTPStatus as status
from typing import Any


class HomelabError(Exception):
    """Base of every domain error: a stable code, an HTTP status, a human detail."""

    code = "error"
    status_code = status.INTERNAL_SERVER_ERROR
    default_detail = "The request failed."
    # Set once the request got past the quota step (quota.Usage): what the caller has left,
    # sent with the answer as rate-limit headers.
    quota: Any = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.default_detail
        # Extra JSON-safe fields for the response body (e.g. execution_id, output).
        self.extra = extra
        super().__init__(self.detail)


# --- whitelist --------------------------------------------------------------------------
class CommandRejected(HomelabError):
    status_code = status.BAD_REQUEST
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


class ConfirmationRequired(CommandRejected):
    """A rule flagged `confirm` asked for by a person (a browser session, the CLI) without
    their confirmation (rules.must_confirm); API keys are never asked."""

    code = "confirmation_required"
    default_detail = 'The rule asks for confirmation: send "confirm": true.'


class InvalidRequest(HomelabError):
    """The request body is malformed: not JSON, or a field fails its check. `errors` holds
    the field errors (name to messages) when fields were checked."""

    status_code = status.BAD_REQUEST
    code = "invalid"
    default_detail = "The request is invalid."

    def __init__(self, detail: str | None = None, *, errors: Any = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.errors = errors


class UnsupportedMediaType(HomelabError):
    status_code = status.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"
    default_detail = "Send the body as a JSON object with `Content-Type: application/json`."


class BodyTooLarge(HomelabError):
    status_code = status.REQUEST_ENTITY_TOO_LARGE
    code = "too_large"
    default_detail = "The request body is too large."


class PermissionDenied(HomelabError):
    """A logged-in user without the right to do this (e.g. commands.execute_command)."""

    status_code = status.FORBIDDEN
    code = "permission_denied"
    default_detail = "You do not have permission to perform this action."


class Throttled(HomelabError):
    """Over the caller's execution rate; `retry_after` is whole seconds (Retry-After)."""

    status_code = status.TOO_MANY_REQUESTS
    code = "throttled"
    default_detail = "Request was throttled."

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class ServerNotFound(HomelabError):
    status_code = status.NOT_FOUND
    code = "server_not_found"
    default_detail = "Server not found."


class KeyScope(HomelabError):
    """The API key is limited to other servers or action types, or is read-only."""

    status_code = status.FORBIDDEN
    code = "key_scope"
    default_detail = "This API key is limited to other servers or actions, or is read-only."


class NoServers(HomelabError):
    status_code = status.BAD_REQUEST
    code = "no_servers"
    default_detail = "No server matches the batch's targets."


class TooManyServers(HomelabError):
    status_code = status.BAD_REQUEST
    code = "too_many_servers"
    default_detail = "The batch targets more servers than HOMELAB_BATCH_MAX_SERVERS allows."


class BatchOverRate(HomelabError):
    """A batch larger than the key's whole rate can never run: no Retry-After helps."""

    status_code = status.BAD_REQUEST
    code = "batch_over_rate"
    default_detail = "The batch targets more servers than the key's rate allows at once."


class Busy(HomelabError):
    status_code = status.SERVICE_UNAVAILABLE
    code = "busy"
    default_detail = "Every runner slot of this process is busy; try again shortly."
    retry_after = 2  # seconds, sent as Retry-After


class NotRunning(HomelabError):
    status_code = status.CONFLICT
    code = "not_running"
    default_detail = "The execution is not running."


class CommandStopped(Exception):
    """The SSH layer stopped a command on request (cancel or shutdown); `.partial` is the
    output read so far. Not a HomelabError: services turns it into one of the two below."""

    def __init__(self, partial: Any = None) -> None:
        super().__init__("the command was stopped on request")
        self.partial = partial


class CommandCancelled(HomelabError):
    status_code = status.CONFLICT
    code = "cancelled"
    default_detail = "The execution was cancelled while it ran; the remote process was stopped."


class CommandInterrupted(HomelabError):
    status_code = status.SERVICE_UNAVAILABLE
    code = "interrupted"
    default_detail = (
        "The service is shutting down; the command was stopped on the server. Try again "
        "once it is back."
    )
    retry_after = 5


class ServiceUnavailable(HomelabError):
    status_code = status.SERVICE_UNAVAILABLE
    code = "unavailable"
    default_detail = "A service homelab depends on is not answering; try again shortly."


class ResultNotRecorded(ServiceUnavailable):
    """The command ran, but the database never took its end: `extra` carries the result.
    Logged where it happens (commands/engine/record.py), so not again for the 503."""

    default_detail = "The command ran, but its result could not be recorded."
    logged = True


# --- SSH ----------------------------------------------------------------------------------
class SSHError(HomelabError):
    """Anything that went wrong on the SSH side; the detail says what to fix."""

    code = "ssh_error"
    default_detail = "The SSH session failed."
    partial: Any = None  # the output read before the failure (ssh.CommandResult), if any


class SSHSetupError(SSHError):
    """The SSH set-up is wrong, not the network: the server record (its pin, user or key
    file) or the key's place on the server needs fixing, and retrying as is cannot help.

    424 Failed Dependency: the request was fine but depended on a login that failed. Not
    409, which this API already answers for an execution's own state (`cancelled`,
    `not_running`); a 4xx, so monitoring does not read it as a crash. Transport failures
    (connect, a lost connection) stay 5xx.
    """

    status_code = status.FAILED_DEPENDENCY


class ConnectFailed(SSHError):
    code = "ssh_connect_failed"
    default_detail = "Could not connect to the server."


class AuthFailed(SSHSetupError):
    """Our key was refused, or there is none we can use (missing, unreadable, encrypted)."""

    code = "ssh_auth_failed"
    default_detail = "The server refused our SSH key."


class HostKeyMismatch(SSHSetupError):
    code = "host_key_mismatch"
    default_detail = "The server's host key does not match the pinned key."


class HostKeyUnknown(SSHSetupError):
    code = "host_key_unknown"
    default_detail = "The server's host key is not pinned."


class ConnectionLost(SSHError):
    code = "ssh_connection_lost"
    default_detail = "The SSH connection was lost while the command ran."


class CommandTimeout(SSHError):
    status_code = status.REQUEST_TIMEOUT
    code = "timeout"
    default_detail = "Command execution timeout."
