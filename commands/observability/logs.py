"""Log lines as JSON objects (HOMELAB_LOG_FORMAT=json), and what a line is about.

Each line is one object: `ts`, `level`, `logger`, `message`, then `execution_id`,
`batch_id`, `server`, `action_type` where the line is about one (an execution's run sets
them for every line logged while it runs, see `about`; a call may pass them in `extra`),
and the finish line's `status`, `exit_code`, `duration_ms`, `who`. Only these fields: a
record's other attributes (Django attaches the request object) stay out of the log.

Settings load this module while configuring logging: it imports nothing of Django.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
from collections.abc import Iterator
from typing import Any

# What a line may be about, and the finish line's facts (commands/observability/receivers.py).
ABOUT = ("execution_id", "batch_id", "server", "action_type")
FACTS = ("status", "exit_code", "duration_ms", "who")

_about: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "homelab_log_about", default=None
)


@contextlib.contextmanager
def about(**fields: Any) -> Iterator[None]:
    """Every line logged inside (on this thread or task) is about these (None left out)."""
    token = _about.set({k: v for k, v in fields.items() if k in ABOUT and v is not None})
    try:
        yield
    finally:
        _about.reset(token)


def about_execution(execution: Any) -> contextlib.AbstractContextManager[None]:
    """`about` an Execution row: its id, batch, server and action type."""
    return about(
        execution_id=execution.pk,
        batch_id=execution.batch_id,
        server=execution.server_name,
        action_type=execution.action_type,
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_about.get() or {})
        for name in (*ABOUT, *FACTS):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an id or a number is written as is, anything else as text.
        return json.dumps(line, default=str, ensure_ascii=False)
