"""Batches: one command on many servers, through the one execution pipeline per target.

`request_batch` checks the request as a whole (permission, body, key scope, targets,
whitelist, quota: every refusal audited, nothing run), writes the Batch row and one
BatchTarget per server in server-name order, and hands the batch to a `BatchRun` on a
thread of its own. The run starts targets as fleet/scheduler.py allows; each target is
checked on its own (disabled server, a rule limited to other servers: `rejected`, no SSH)
and started with services.start, so its audit row is saved before its SSH starts, its
output goes to its own log and to the batch's, and it waits for a runner slot rather than
failing `busy`. The run's thread does every database write of the batch; runner threads
only hand it their outcomes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from commands import audit, quota, rules, scopes, services, signals, whitelist
from commands.engine import framelog
from commands.engine.runner import CANCELLED, INTERRUPTED, process_alive, process_identity
from commands.exceptions import (
    BatchOverRate,
    CommandRejected,
    HomelabError,
    NoServers,
    NotRunning,
    ServiceUnavailable,
    TooManyServers,
)
from commands.fleet.scheduler import Scheduler, concurrency_for, errors_allowed
from commands.models import AllowedCommand, Batch, BatchTarget, Execution, Server
from commands.observability import logs
from commands.requests import BatchRequest, Caller, parse_limit, validated
from commands.results import Frame, FrameType, output_frame, truncated_frame
from commands.whitelist import Match

logger = logging.getLogger(__name__)
TargetStatus = BatchTarget.Status
SUCCEEDED = TargetStatus.SUCCEEDED


# --- the request -------------------------------------------------------------------------
def request_batch(*, caller: Caller, body: Any, wait: bool | None = None) -> Batch:
    """Start (and with wait, see through) the batch the body asks for, for caller; every
    refusal of the whole is audited and raised, and then nothing runs."""
    data = None
    try:
        services.require_execute(caller)
        data = body()
        request = validated(BatchRequest, data)
        scopes.check_may_act(caller.api_key)
        scopes.check_action(caller.api_key, request["action_type"])
        servers = targets_of(request, caller)
        # The command must fit the rule at all; where the rule may run is per target.
        match = rules.resolve(request["command"], request["action_type"])
        count = len(servers)
        rules.require_confirmation(
            match.rule,
            caller,
            confirmed=request["confirm"],
            where=f"{count} server{'s' * (count != 1)}",
        )
        take_quota(caller, count)
    except HomelabError as exc:
        audit.record_refusal(
            exc, caller=caller, server=None, server_ref="", data=data, where=where_of(data)
        )
        raise
    batch = create(request, servers, caller)
    run = BatchRun.start(batch, caller)
    if wait if wait is not None else request["wait"]:
        run.finished.wait()
        batch.refresh_from_db()
    return batch


def where_of(data: Any) -> str:
    """How a refused batch's audit row names its targets: batch:tag=pi, batch:nas,3."""
    data = data if isinstance(data, dict) else {}
    if isinstance(data.get("tag"), str):
        return f"batch:tag={data['tag']}"[:64]
    if isinstance(data.get("servers"), list):
        return ("batch:" + ",".join(map(str, data["servers"])))[:64]
    return "batch"


def targets_of(request: dict[str, Any], caller: Caller) -> list[Server]:
    """The servers the batch runs on, in server-name order: those named (each by id or
    name, once), or those with the tag among the servers the caller's key may see."""
    key = caller.api_key
    if "tag" in request:
        visible = scopes.filter_servers(Server.objects.all(), key)
        servers = list(visible.filter(tags__name=request["tag"]).distinct())
        if not servers:
            raise NoServers(
                f"No server has the tag {request['tag']!r}"
                + (" among those this key may use" if scopes.limits_servers(key) else "")
                + "; tag servers in the admin or with `./manage.py tagserver NAME --add TAG`."
            )
    else:
        found: dict[int, Server] = {}
        for ref in request["servers"]:
            server = services.find_server(ref, caller)  # ServerNotFound names the ref
            if server is None:
                # A limited key is not told whether a server outside its scope exists.
                raise scopes.outside_scope(key, "the batch names a server outside them")
            found[server.pk] = server
        servers = list(found.values())
    limit = settings.HOMELAB_BATCH_MAX_SERVERS
    if len(servers) > limit:
        raise TooManyServers(
            f"The batch targets {len(servers)} servers; at most {limit} "
            "(HOMELAB_BATCH_MAX_SERVERS) may be targeted at once: split it, or raise the limit."
        )
    return sorted(servers, key=lambda server: server.name)


def take_quota(caller: Caller, count: int) -> None:
    """Every target counts as one execution, all at once or none (429 throttled); a batch
    the key's whole rate could never hold is refused for good (400 batch_over_rate)."""
    if caller.ident is None:
        return  # the CLI has no quota
    limit, seconds = quota.limit_of(caller)
    if count > limit:
        where = (
            f"`./manage.py createapikey NAME --rate {count}/min` for a new key, or the rate on "
            f"the key's page in the admin (API keys > {caller.api_key.name})"
            if caller.api_key is not None
            else "HOMELAB_EXECUTE_RATE"
        )
        raise BatchOverRate(
            f"The batch targets {count} servers, more than the {limit} executions per "
            f"{seconds} s this caller may make; it could never run. Split it, or raise the "
            f"rate: {where}."
        )
    quota.take(caller, count)


def create(request: dict[str, Any], servers: list[Server], caller: Caller) -> Batch:
    """The Batch row and its targets (pending, in start order), and the batch's log."""
    count = len(servers)
    concurrency = concurrency_for(
        *parse_limit(request["max_concurrency"], name="max_concurrency", minimum=1), count
    )
    max_errors = None
    if request.get("max_errors") is not None:
        max_errors = errors_allowed(
            *parse_limit(request["max_errors"], name="max_errors", minimum=0), count
        )
    account = caller.account
    batch = Batch.objects.create(
        api_key=caller.api_key,
        api_key_name=caller.api_key.name if caller.api_key else "",
        user=account,
        username=account.get_username() if account is not None else caller.name,
        client_ip=caller.client_ip,
        action_type=request["action_type"],
        command=request["command"],
        tag=request.get("tag", ""),
        requested=request.get("servers", []),
        max_concurrency=concurrency,
        max_errors=max_errors,
        options={
            "max_concurrency": request["max_concurrency"],
            "max_errors": request.get("max_errors"),
        },
        runner=process_identity(),
    )
    BatchTarget.objects.bulk_create(
        BatchTarget(batch=batch, position=i, server=server, server_name=server.name)
        for i, server in enumerate(servers)
    )
    # The log lives as long as its longest possible run, then the retention.
    framelog.backend().start(framelog.batch_log(batch.pk), ttl=24 * 3600)
    return batch


# --- the run -----------------------------------------------------------------------------
@dataclass
class Ended:
    """A runner thread's word that a target's run is over."""

    index: int
    execution: Execution


@dataclass
class BatchRun:
    """One batch running in this process, driven by its own thread."""

    batch: Batch
    caller: Caller
    targets: list[BatchTarget]
    scheduler: Scheduler
    events: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    halted_by: str = ""  # CANCELLED or INTERRUPTED
    _rule: AllowedCommand | None = field(default=None, repr=False)
    _usable_on: set[int] | None = field(default=None, repr=False)
    _match: Match | None = field(default=None, repr=False)

    @classmethod
    def start(cls, batch: Batch, caller: Caller) -> BatchRun:
        targets = list(batch.targets.select_related("server").order_by("position"))
        run = cls(
            batch=batch,
            caller=caller,
            targets=targets,
            scheduler=Scheduler(len(targets), batch.max_concurrency, batch.max_errors),
        )
        with _runs_lock:
            _runs[batch.pk] = run
        thread = threading.Thread(target=run.drive, name=f"homelab-batch-{batch.pk}", daemon=True)
        thread.start()
        return run

    @property
    def log(self) -> str:
        return framelog.batch_log(self.batch.pk)

    # --- the driver thread ---------------------------------------------------------------
    def drive(self) -> None:
        with logs.about(batch_id=self.batch.pk, action_type=self.batch.action_type):
            self._drive_and_finish()

    def _drive_and_finish(self) -> None:
        try:
            self._drive()
        except Exception:
            logger.exception("batch %s failed; stopping it", self.batch.pk)
            self.halt(INTERRUPTED)
            self._wait_for_running()
        finally:
            try:
                self._finish()
            except Exception:
                logger.exception("could not record the end of batch %s", self.batch.pk)
            with _runs_lock:
                _runs.pop(self.batch.pk, None)
            self.finished.set()
            close_old_connections()

    def _drive(self) -> None:
        bounded = services.runner()
        while not self.scheduler.done:
            self._handle_events(block=False)
            if bounded.closing and not self.scheduler.halted:
                self.halt(INTERRUPTED)
            index = self.scheduler.take()
            if index is None:
                self._skip(self.scheduler.leftovers())
                if not self.scheduler.done:
                    self._handle_events(block=True)
                continue
            self._start_target(index)

    def _handle_events(self, *, block: bool) -> None:
        """Record the targets that ended (waiting a moment for one, with block)."""
        try:
            event = self.events.get(timeout=0.2) if block else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            if event == "halt":
                pass  # a cancel or shutdown woke us: the loop re-reads the scheduler
            else:
                self._ended(event.index, event.execution)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def _match_for(self, server: Server) -> Match:
        """The whitelist's match on server. The batch is one request: its rule is read
        once, when it starts; a server it may not run on, or a disabled one, goes through
        services.check_runnable for the refusal the single-server API gives."""
        if self._rule is None:
            self._rule = rules.find(self.batch.action_type)
            if self._rule is not None:
                self._usable_on = (
                    None
                    if self._rule.all_servers
                    else set(self._rule.servers.values_list("pk", flat=True))
                )
                self._match = whitelist.match(self.batch.command, self._rule)
        usable = self._rule is not None and (
            self._usable_on is None or server.pk in self._usable_on
        )
        if not (usable and server.enabled):
            return services.check_runnable(server, self.batch.command, self.batch.action_type)
        return self._match

    def _start_target(self, index: int) -> None:
        target = self.targets[index]
        batch = self.batch
        server = target.server
        if server is None:  # deleted since the batch began
            self._never_ran(index, TargetStatus.REJECTED, "server_not_found", taken=True)
            return
        execution = audit.new_execution(
            caller=self.caller,
            server=server,
            server_name=server.name,
            command=batch.command,
            action_type=batch.action_type,
        )
        execution.batch = batch
        try:
            match = self._match_for(server)
        except CommandRejected as exc:
            audit.reject(execution, exc)
            self._ended(index, execution)
            return
        # A batch waits for a runner slot (HOMELAB_MAX_RUNNING bounds it); never `busy`.
        if not services.runner().wait_for_slot(self.stop):
            status = self.halted_by or INTERRUPTED
            self._never_ran(index, status, status, taken=True)
            return
        try:
            run = services.start(
                execution,
                argv=services.sent_argv(server, match.argv),
                timeout=match.rule.timeout_seconds,
                also=[self.log],
                frame_fields={"server": server.name},
            )
        except HomelabError as exc:  # a shutdown began between the slot and the start
            logger.info("batch %s target %s not started: %s", batch.pk, server.name, exc.code)
            self._never_ran(index, INTERRUPTED, exc.code, taken=True)
            return
        target.execution = execution
        target.status = TargetStatus.RUNNING
        target.save(update_fields=["execution", "status"])
        run.future.add_done_callback(
            lambda done, index=index, pk=execution.pk: self.events.put(
                Ended(index, _closed_row(done, pk))
            )
        )
        if self.stop.is_set():  # a cancel came while it was starting
            services.runner().stop(execution.pk, self.halted_by or CANCELLED)

    def _ended(self, index: int, execution: Execution) -> None:
        """Target index ended with this (closed or refused) execution row."""
        target = self.targets[index]
        started = target.execution_id is not None
        target.execution = execution
        target.status = execution.status
        if not started:  # a started target's status is its execution's (no write needed)
            target.save(update_fields=["execution", "status"])
        self.scheduler.ended(index, succeeded=execution.status == SUCCEEDED)
        self._publish([result_frame(target, execution)])

    def _never_ran(self, index: int, status: str, code: str, *, taken: bool = False) -> None:
        """Target index ends without an execution; taken: the scheduler had let it start."""
        if taken:
            self.scheduler.ended(index, succeeded=False)
        target = self.targets[index]
        target.status, target.error_code = status, code
        target.save(update_fields=["status", "error_code"])
        self._publish([result_frame(target, None)])

    def _skip(self, indexes: Iterable[int]) -> None:
        """Targets that will never start: skipped (too many errors), or cancelled or
        interrupted with the batch."""
        status = self.halted_by or TargetStatus.SKIPPED
        for index in indexes:
            self._never_ran(index, status, "skipped" if status == TargetStatus.SKIPPED else status)

    def _wait_for_running(self) -> None:
        while self.scheduler.running:
            self._handle_events(block=True)

    def _finish(self) -> None:
        batch = self.batch
        if self.halted_by:
            status = self.halted_by
        elif all(target.status == SUCCEEDED for target in self.targets):
            status = Batch.Status.SUCCEEDED
        else:
            status = Batch.Status.FAILED
        closed = Batch.objects.filter(pk=batch.pk, status=Batch.Status.RUNNING).update(
            status=status, finished_at=timezone.now()
        )
        batch.refresh_from_db()
        body = summary(batch)
        self._publish([Frame(FrameType.SUMMARY, None, **body)])
        try:
            framelog.backend().end(self.log)
        except Exception:
            logger.warning("could not end the stream of batch %s", batch.pk)
        if closed:
            signals.batch_finished.send_robust(Batch, batch=batch)
            logger.info(
                "batch %s ended %s: %s",
                batch.pk,
                batch.status,
                ", ".join(f"{n} {s}" for s, n in body["counts"].items() if n),
            )

    def _publish(self, frames: list[Frame]) -> None:
        try:
            framelog.backend().append(self.log, frames)
        except Exception:
            logger.warning("could not publish to the stream of batch %s", self.batch.pk)

    # --- from other threads --------------------------------------------------------------
    def halt(self, reason: str) -> None:
        """Start nothing more; stop the running targets on their servers (a cancel) or let
        the runner stop them (a shutdown). The driver then records the rest."""
        self.halted_by = self.halted_by or reason
        self.scheduler.halted = True
        self.stop.set()
        if reason == CANCELLED:
            for target in self.targets:
                if target.status == TargetStatus.RUNNING and target.execution_id:
                    services.runner().stop(target.execution_id, CANCELLED)
        self.events.put("halt")


def _closed_row(done: Any, execution_id: int) -> Execution:
    """The closed row of a run's future (the Outcome's row; the error is on it), or the
    row as stored if the run itself failed (a bug: logged by the runner)."""
    try:
        return done.result().execution
    except Exception:
        logger.exception("the run of execution %s failed", execution_id)
        return Execution.objects.get(pk=execution_id)


_runs: dict[int, BatchRun] = {}
_runs_lock = threading.Lock()


# --- cancel ------------------------------------------------------------------------------
def cancel_batch(batch: Batch, *, wait_seconds: float = 5.0) -> Batch:
    """Stop a running batch wherever it runs: its running targets are stopped on their
    servers, the rest end `cancelled`. The batch once it has ended (or as it stands)."""
    if batch.status != Batch.Status.RUNNING:
        raise NotRunning(f"Batch {batch.pk} is not running (it is {batch.status}).")
    with _runs_lock:
        run = _runs.get(batch.pk)
    if run is not None:
        run.halt(CANCELLED)
        run.finished.wait(wait_seconds)
    elif batch.runner == process_identity() or process_alive(batch.runner) is False:
        # Nothing runs it any more (its process stopped): close it and say so.
        Batch.objects.filter(pk=batch.pk).interrupt()
        raise NotRunning(f"Batch {batch.pk} is not running: the process that ran it stopped.")
    else:
        _send_cancel(batch)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            batch.refresh_from_db()
            if batch.status != Batch.Status.RUNNING:
                break
            time.sleep(0.05)
    batch.refresh_from_db()
    return batch


def _send_cancel(batch: Batch) -> None:
    try:
        sent = framelog.backend().send_cancel(batch.runner, {"batch_id": batch.pk})
    except Exception:
        raise ServiceUnavailable(
            "The channel layer (Redis, REDIS_URL) is not answering, so the cancel cannot "
            "reach the process running the batch; check that Redis is up."
        ) from None
    if not sent:
        raise ServiceUnavailable(
            f"Batch {batch.pk} runs in another process ({batch.runner}), which this one "
            "cannot reach without a shared channel layer: set REDIS_URL for every worker."
        )


def _cancel_here(batch_id: int) -> None:
    with _runs_lock:
        run = _runs.get(batch_id)
    if run is not None:
        run.halt(CANCELLED)


services.cancel_handlers["batch_id"] = _cancel_here


# --- what a batch looks like ---------------------------------------------------------------
COUNTED = [status for status, _ in TargetStatus.choices]


def target_result(target: BatchTarget, execution: Execution | None) -> dict[str, Any]:
    """One target's result, as GET batches/{id}/ and the `result` frame give it."""
    started = execution is not None
    return {
        "server": target.server_name,
        "server_id": target.server_id,
        "execution_id": execution.pk if started else None,
        "status": execution.status if started else target.status,
        "exit_code": execution.exit_code if started else None,
        "stdout": execution.stdout if started else "",
        "stderr": execution.stderr if started else "",
        "duration_ms": execution.duration_ms if started else None,
        "stdout_truncated": execution.stdout_truncated if started else False,
        "stderr_truncated": execution.stderr_truncated if started else False,
        "stdout_cut_bytes": execution.stdout_cut_bytes if started else 0,
        "stderr_cut_bytes": execution.stderr_cut_bytes if started else 0,
        "code": (execution.error_code or None) if started else (target.error_code or None),
    }


def result_frame(target: BatchTarget, execution: Execution | None) -> Frame:
    fields = target_result(target, execution)
    return Frame(FrameType.RESULT, fields.pop("execution_id"), **fields)


def results(batch: Batch) -> list[dict[str, Any]]:
    """Every target's result so far, in server-name order; a running one's output so far."""
    found = []
    for target in batch.targets.select_related("execution").order_by("position"):
        execution = target.execution
        result = target_result(target, execution)
        if execution is not None and execution.status == Execution.Status.RUNNING:
            result.update(services.snapshot(execution))
        found.append(result)
    return found


def counts(batch: Batch) -> dict[str, int]:
    tally = dict.fromkeys(COUNTED, 0)
    for target in batch.targets.select_related("execution"):
        status = target.execution.status if target.execution is not None else target.status
        tally[status] = tally.get(status, 0) + 1
    return tally


def summary(batch: Batch) -> dict[str, Any]:
    """The batch body without its results (the `summary` frame, GET batches/)."""
    return {
        "batch_id": batch.pk,
        "status": batch.status,
        "command": batch.command,
        "action_type": batch.action_type,
        "tag": batch.tag or None,
        "servers": batch.requested or None,
        "max_concurrency": batch.max_concurrency,
        "max_errors": batch.max_errors,
        "counts": counts(batch),
        "created_at": batch.created_at.isoformat().replace("+00:00", "Z"),
        "finished_at": (
            batch.finished_at.isoformat().replace("+00:00", "Z") if batch.finished_at else None
        ),
    }


def stored_frames(batch: Batch) -> list[Frame]:
    """A batch whose live log is gone: each target's stored output and result, then the
    summary."""
    frames: list[Frame] = []
    for target in batch.targets.select_related("execution").order_by("position"):
        execution = target.execution
        if execution is not None:
            for stream in ("stdout", "stderr"):
                if text := getattr(execution, stream):
                    frame = output_frame(execution.pk, stream, text)
                    frames.append(frame.with_fields(server=target.server_name))
                if getattr(execution, f"{stream}_truncated"):
                    frame = truncated_frame(execution.pk, stream)
                    frames.append(frame.with_fields(server=target.server_name))
        frames.append(result_frame(target, execution))
    frames.append(Frame(FrameType.SUMMARY, None, **summary(batch)))
    return frames


def visible_batches(queryset, caller: Caller):
    """The batches caller may read: all of them, or for a key limited to servers its own."""
    if scopes.limits_servers(caller.api_key):
        return queryset.filter(api_key=caller.api_key)
    return queryset
