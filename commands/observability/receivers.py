"""What observability does when the pipeline announces something (commands/signals.py).

Every entry point (HTTP, WebSocket, admin, CLI, batch) goes through the Execution's
lifecycle, which sends the signals; hooking here counts them all, once. Each receiver is
quick (a counter, one log line) and runs on the thread that made the change.

Connected by `connect()` from the app's ready(): the log lines always, the metrics
unless HOMELAB_METRICS=0.
"""

from __future__ import annotations

import logging
from typing import Any

from commands import signals
from commands.models import Batch, Execution
from commands.observability import metrics

# One INFO line per finished execution, under a name of its own so it can be routed or
# silenced on its own (LOGGING's "homelab.executions").
execution_log = logging.getLogger("homelab.executions")
batch_log = logging.getLogger("homelab.batches")

DISPATCH_UID = "homelab-observability"


def execution_started(sender: Any, *, execution: Execution, **kwargs: Any) -> None:
    metrics.RUNNING.inc()


def execution_finished(sender: Any, *, execution: Execution, **kwargs: Any) -> None:
    metrics.RUNNING.dec()
    server, action = execution.server_name, execution.action_type
    metrics.EXECUTIONS.labels(server, action, execution.status).inc()
    if execution.duration_ms is not None:
        metrics.DURATION.labels(server, action).observe(execution.duration_ms / 1000)


def execution_refused(sender: Any, *, code: str, **kwargs: Any) -> None:
    if code == "throttled":
        metrics.THROTTLED.inc()
    elif code in metrics.REJECTED_CODES:
        metrics.REJECTED.labels(code).inc()


def batch_finished(sender: Any, *, batch: Batch, **kwargs: Any) -> None:
    metrics.BATCHES.labels(batch.status).inc()


def log_batch(sender: Any, *, batch: Batch, **kwargs: Any) -> None:
    batch_log.info(
        "batch %s finished: %s, %s",
        batch.pk,
        batch.action_type,
        batch.status,
        extra={"batch_id": batch.pk, "action_type": batch.action_type, "status": batch.status},
    )


def who(execution: Execution) -> str:
    """Who asked, as the audit row names them: the key, else the user ('-': nobody)."""
    if execution.api_key_name:
        return f"key {execution.api_key_name}"
    return f"user {execution.username}" if execution.username else "-"


def log_execution(sender: Any, *, execution: Execution, **kwargs: Any) -> None:
    """The one line a finished execution gets: where, what, how it ended, how long, who.
    Never its output (it may hold anything the server printed)."""
    fields = {
        "execution_id": execution.pk,
        "server": execution.server_name,
        "action_type": execution.action_type,
        "status": execution.status,
        "exit_code": execution.exit_code,
        "duration_ms": execution.duration_ms,
        "who": who(execution),
    }
    if execution.batch_id is not None:
        fields["batch_id"] = execution.batch_id
    execution_log.info(
        "execution %s finished: %s on %s, %s, exit code %s, %s ms, by %s",
        execution.pk,
        execution.action_type,
        execution.server_name,
        execution.status,
        "-" if execution.exit_code is None else execution.exit_code,
        execution.duration_ms,
        fields["who"],
        extra=fields,
    )


def connect(*, with_metrics: bool = True) -> None:
    """Hook the receivers to the pipeline's signals (once, however often called)."""
    hooks = [
        (signals.execution_finished, log_execution),
        (signals.batch_finished, log_batch),
    ]
    if with_metrics:
        hooks += [
            (signals.execution_started, execution_started),
            (signals.execution_finished, execution_finished),
            (signals.execution_refused, execution_refused),
            (signals.batch_finished, batch_finished),
        ]
    for signal, receiver in hooks:
        signal.connect(receiver, dispatch_uid=f"{DISPATCH_UID}-{receiver.__name__}")
