"""Business logic: run one whitelisted command on one server, with its audit row.

The order is the point: whitelist -> audit row saved (status `running`) -> SSH ->
audit row completed. No database transaction is held open across the SSH call.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import shlex
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from commands import live, rules, ssh
from commands.audit import mark_interrupted, new_execution, record_rejection
from commands.exceptions import (
    Busy,
    CommandCancelled,
    CommandInterrupted,
    CommandRejected,
    CommandStopped,
    CommandTimeout,
    HomelabError,
    NotRunning,
    ServerDisabled,
    ServiceUnavailable,
    SSHError,
)
from commands.models import ApiKey, Execution, Server
from commands.runner import (
    CANCELLED,
    INTERRUPTED,
    Run,
    Runner,
    current_runner,
    get_runner,
    process_alive,
    process_identity,
)
from commands.streaming import LiveOutput, result_fields

Status = Execution.Status
logger = logging.getLogger(__name__)


def executor() -> ssh.SSHPooledExecutor:
    """The process-wide SSH executor, configured from settings on first use."""
    return ssh.get_executor(
        connect_timeout=settings.HOMELAB_CONNECT_TIMEOUT,
        idle_seconds=settings.HOMELAB_SSH_IDLE_SECONDS,
        max_connections_per_target=settings.HOMELAB_SSH_MAX_CONNECTIONS,
    )


SUDO = ("sudo", "-n", "--")


def sent_argv(server: Server, argv: list[str]) -> list[str]:
    """The argv sent to server: the matched one, behind `sudo -n --` on a server that
    uses sudo. -n makes sudo fail at once, with its own message on stderr, where it
    would wait for a password; -- keeps it from reading the command as its options."""
    return [*SUDO, *argv] if server.use_sudo else list(argv)


def target_for(server: Server) -> ssh.SSHTarget:
    return ssh.SSHTarget(
        name=server.name,
        host=server.hostname,
        port=server.port,
        username=server.username,
        key_filename=server.key_file or settings.HOMELAB_SSH_KEY_FILE or None,
        host_key=server.host_key,
    )


def runner() -> Runner:
    """The process-wide bounded runner, configured from settings on first use."""
    existing = current_runner()
    if existing is not None:
        return existing
    created = get_runner(
        max_running=settings.HOMELAB_MAX_RUNNING,
        busy_wait=settings.HOMELAB_BUSY_WAIT_SECONDS,
        drain_seconds=settings.HOMELAB_DRAIN_SECONDS,
    )
    created.after_shutdown = _close_own_rows
    # Cancels for this process's runs may come from other workers (Redis profile).
    live.backend().listen_for_cancels(
        process_identity(), lambda execution_id: created.stop(execution_id, CANCELLED)
    )
    return created


def _close_own_rows(wait_seconds: float = 1.0) -> None:
    """At exit: rows of this process still `running` were stopped with it. A caller thread
    that waited for one records it itself (with its output); give it a moment first."""
    own = Execution.objects.filter(runner=process_identity(), status=Status.RUNNING)
    deadline = time.monotonic() + wait_seconds
    while own.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    mark_interrupted(own)


def execute_command(
    *,
    server: Server,
    command: str,
    action_type: str,
    wait: bool = True,
    api_key: ApiKey | None = None,
    user: Any = None,
    client_ip: str | None = None,
) -> Execution:
    """Run a whitelisted command; the returned row holds the result (any exit code).

    With wait=False it returns once the command is handed to the runner (the row is
    `running`; SSH starts on the runner thread, which completes the row). Raises a
    `HomelabError` (rejection, busy, timeout, SSH failure, cancel) whose `extra` carries
    the `execution_id` of the audit row, and for a timeout or a cancel the partial output.
    """
    execution = new_execution(
        server=server,
        server_name=server.name,
        command=command,
        action_type=action_type,
        api_key=api_key,
        user=user,
        client_ip=client_ip,
    )
    bounded = runner()
    try:
        if not server.enabled:
            raise ServerDisabled(f"Server {server.name} is disabled; enable it in the admin.")
        match = rules.resolve(command, action_type, server)
        timeout = match.rule.timeout_seconds  # a stored AllowedCommand's
        bounded.reserve()  # may wait a moment; Busy when every slot stays taken
    except (CommandRejected, Busy) as exc:
        record_rejection(execution, code=exc.code, detail=exc.detail)
        exc.extra["execution_id"] = execution.pk
        raise

    try:
        execution.argv = sent_argv(server, match.argv)  # exactly what the server runs
        execution.status = Status.RUNNING
        execution.runner = process_identity()
        execution.save()  # the audit row exists before SSH starts
    except BaseException:
        bounded.release()
        raise
    try:
        live.backend().start(execution.pk, ttl=timeout + 60)
    except Exception:  # the command still runs and is recorded; followers read the row
        logger.warning("no live stream for execution %s: the live store failed", execution.pk)
    # The runner gets its own copy: with wait=False it completes the row while the
    # caller still answers from this one.
    work = functools.partial(
        _run,
        execution=copy.copy(execution),
        target=target_for(server),
        timeout=timeout,
        record=not wait,
    )
    try:
        run = bounded.submit(execution.pk, work)
    except Busy as exc:  # a shutdown began meanwhile
        record_rejection(execution, code=exc.code, detail=exc.detail)
        exc.extra["execution_id"] = execution.pk
        raise
    if not wait:
        return execution
    # The caller's thread waits and completes the row: a client that goes away does not
    # stop this thread, so the result is still recorded. No connection is held while the
    # command runs: PostgreSQL's idle_session_timeout, pgbouncer or a firewall may cut an
    # idle one, and a long command would pin one per running request. Closing costs a
    # reconnect per request (docs/performance.md). Inside a transaction (tests) it stays.
    # SQLite is a file: nothing cuts an idle connection and none is pinned on a server,
    # so it stays open (one connect less per request; docs/performance.md, issue 12).
    if not connection.in_atomic_block and connection.vendor != "sqlite":
        connection.close()
    return complete(execution, run.future.result())


@dataclass(frozen=True)
class Outcome:
    """How a run ended: a result, a stop on request, or an error (with partial output)."""

    result: ssh.CommandResult | None = None
    stopped: str = ""  # CANCELLED or INTERRUPTED
    error: HomelabError | None = None
    partial: ssh.CommandResult | None = None


def _run(
    run: Run,
    *,
    execution: Execution,
    target: ssh.SSHTarget,
    timeout: int,
    record: bool,
) -> Outcome:
    """The runner thread's part: SSH with live output, then (wait=False) the row."""
    output = LiveOutput(
        execution.pk,
        stream_limit=settings.HOMELAB_STREAM_LIMIT,
        output_limit=settings.HOMELAB_OUTPUT_LIMIT,
    )
    try:
        result = executor().execute(
            target,
            shlex.join(execution.argv),
            timeout=timeout,
            output_limit=settings.HOMELAB_OUTPUT_LIMIT,
            on_output=output,
            stop=run.stop,
        )
        outcome = Outcome(result=result)
    except CommandStopped as exc:
        outcome = Outcome(stopped=run.reason or CANCELLED, partial=exc.partial)
    except CommandTimeout as exc:
        outcome = Outcome(error=exc, partial=getattr(exc, "partial", None))
    except HomelabError as exc:
        outcome = Outcome(error=exc)
    except Exception:
        # A bug, not an SSH condition: keep the traceback in the server log only.
        logger.exception("unexpected error running execution %s", execution.pk)
        error = SSHError("Unexpected error while running the command; see the server log.")
        outcome = Outcome(error=error)
    try:
        output.flush()
    except Exception:
        logger.warning("could not publish the last output of execution %s", execution.pk)
    if record:
        with contextlib.suppress(HomelabError):  # recorded on the row; nobody waits for it
            complete(execution, outcome)
    return outcome


def complete(execution: Execution, outcome: Outcome) -> Execution:
    """Record how the run ended, publish the result frame; raise the error a waiting
    caller should get (with the row's id)."""
    error = outcome.error
    if outcome.stopped == INTERRUPTED:
        error = CommandInterrupted()
        status = Status.INTERRUPTED
    elif outcome.stopped:
        error = CommandCancelled()
        status = Status.CANCELLED
    elif isinstance(error, CommandTimeout):
        status = Status.TIMEOUT
    elif error is not None:
        status = Status.ERROR
    else:
        status = Status.SUCCEEDED if outcome.result.exit_code == 0 else Status.FAILED
    try:
        execution = _finish_once_more_if_needed(execution, status, outcome, error)
    except Exception:
        # The command ran and its result is in hand: answer and stream it all the same.
        # The row stays `running` until markinterrupted closes it after a restart.
        logger.error("could not record the end of execution %s in the database", execution.pk)
    try:
        backend = live.backend()
        backend.append(execution.pk, [live.frame("result", **result_fields(execution))])
        backend.end(execution.pk)
    except Exception:
        logger.warning("could not publish the result of execution %s", execution.pk)
    if error is not None:
        error.extra["execution_id"] = execution.pk
        if outcome.partial is not None or status in (Status.CANCELLED, Status.INTERRUPTED):
            error.extra.update(output_fields(outcome.partial))
        raise error
    return execution


def _finish_once_more_if_needed(
    execution: Execution, status: str, outcome: Outcome, error: HomelabError | None
) -> Execution:
    """finish(), retried once on a fresh connection (the first write normally opens a
    fresh one; a worker thread's persistent connection may still have been cut)."""
    result = outcome.result or outcome.partial
    try:
        return finish(execution, status, result, error=error)
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        connection.close()
        return finish(execution, status, result, error=error)


def cancel_execution(execution: Execution, *, wait_seconds: float = 5.0) -> Execution:
    """Stop a running execution wherever it runs; the row once it has ended (or, if its
    process has not answered within wait_seconds, as it stands)."""
    if execution.status != Status.RUNNING:
        raise NotRunning(f"Execution {execution.pk} is not running (it is {execution.status}).")
    if execution.runner == process_identity():
        runner().stop(execution.pk, CANCELLED)
    elif process_alive(execution.runner) is False:
        # Its process is gone: nothing runs it any more. Close the row and say so.
        mark_interrupted(Execution.objects.filter(pk=execution.pk))
        raise NotRunning(
            f"Execution {execution.pk} is not running: the process that ran it stopped."
        )
    elif not _send_cancel(execution):
        raise ServiceUnavailable(
            f"Execution {execution.pk} runs in another process ({execution.runner}), which "
            "this one cannot reach without a shared channel layer: set REDIS_URL for every "
            "worker, or cancel it through the process that runs it."
        )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        execution.refresh_from_db()
        if execution.status != Status.RUNNING:
            break
        time.sleep(0.05)
    return execution


def _send_cancel(execution: Execution) -> bool:
    try:
        return live.backend().send_cancel(execution.runner, execution.pk)
    except Exception:
        raise ServiceUnavailable(
            "The channel layer (Redis, REDIS_URL) is not answering, so the cancel cannot "
            "reach the process running the command; check that Redis is up."
        ) from None


def output_fields(result: ssh.CommandResult | None) -> dict[str, Any]:
    if result is None:
        return {"stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False}
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
    }


def finish(
    execution: Execution,
    status: str,
    result: ssh.CommandResult | None,
    *,
    error: HomelabError | None = None,
) -> Execution:
    """Complete the audit row after SSH, whatever happened.

    Only a row still `running` is completed: one already closed (by a shutdown, or by
    markinterrupted) keeps its status, and the row as stored is returned.
    """
    execution.status = status
    execution.finished_at = timezone.now()
    for field, value in output_fields(result).items():
        setattr(execution, field, value)
    if result is not None:
        execution.duration_ms = result.duration_ms
        if status not in (Status.TIMEOUT, Status.CANCELLED, Status.INTERRUPTED):
            execution.exit_code = result.exit_code
    if execution.duration_ms is None:
        elapsed = execution.finished_at - execution.created_at
        execution.duration_ms = int(elapsed.total_seconds() * 1000)
    if error is not None:
        execution.error_code = error.code
        execution.error_detail = error.detail
    fields = [
        "status",
        "finished_at",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "duration_ms",
        "exit_code",
        "error_code",
        "error_detail",
    ]
    updated = Execution.objects.filter(pk=execution.pk, status=Status.RUNNING).update(
        **{name: getattr(execution, name) for name in fields}
    )
    if not updated:
        execution.refresh_from_db()
    return execution
