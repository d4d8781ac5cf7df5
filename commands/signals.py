"""What the execution pipeline announces, for whoever wants to hook in (metrics, the fleet).

Like NetBox's job_start / job_end: sent by the Execution's own lifecycle methods, so every
entry point (HTTP, WebSocket, admin, CLI, batch) is covered without a hook in each.
Receivers run synchronously on the thread making the change and must be quick; an
exception in one is logged and never stops the command or its audit row
(`send_robust`).
"""

from django.dispatch import Signal

# The audit row was saved `running` and SSH is about to start. kwargs: execution.
execution_started = Signal()
# The row was closed: succeeded, failed, timeout, error, cancelled or interrupted.
# kwargs: execution (status, exit_code, duration_ms are final).
execution_finished = Signal()
# A request was refused before anything ran (a `rejected` row was written or counted).
# kwargs: code (the error code), execution (the row, may be a repeat's counted row).
execution_refused = Signal()
# A batch ended (succeeded, failed, cancelled or interrupted). kwargs: batch.
batch_finished = Signal()
