"""Writing the end of a run when the database does not take it (a restart, a failover).

The runner thread that ran the command holds its result; the write is retried with
back-off for HOMELAB_RECORD_RETRY_SECONDS. Memory stays bounded: one result per runner
thread (at most HOMELAB_MAX_RUNNING), each at most twice HOMELAB_OUTPUT_LIMIT. Meanwhile,
and after giving up, a note in the cache (shared by every worker with REDIS_URL) says
how the command ended, so a cancel of its row can say what is going on instead of
waiting on a command that is over. The caller decides what a write never made means (a
503 with the result, services.close).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection

from commands.exceptions import ResultNotRecorded
from commands.models import Execution
from commands.results import result_frame_fields

logger = logging.getLogger(__name__)

FIRST_DELAY = 0.1  # seconds before the first retry; doubled each time, up to MAX_DELAY
MAX_DELAY = 2.0
NOTE_SECONDS = 24 * 3600  # a note on a row that was never written outlives any cancel


def note_key(execution_id: int) -> str:
    return f"homelab:unrecorded:{execution_id}"


def record_end(
    execution: Execution, first: Callable[[], Any], *, give_up: Callable[[], bool] | None = None
) -> bool:
    """Call first (the lifecycle method that closes the row); while the database refuses,
    retry execution.write_end() with back-off until HOMELAB_RECORD_RETRY_SECONDS have
    passed, or give_up() says to stop sooner (the process is shutting down: its caller
    should get the result now, not be cut off by the exit). True once written (or closed
    meanwhile by someone else), False if never."""
    try:
        first()
        return True
    except DatabaseError as exc:
        if connection.in_atomic_block:  # a test's transaction: nothing to retry on
            raise
        failure = type(exc).__name__
    seconds = settings.HOMELAB_RECORD_RETRY_SECONDS
    deadline = time.monotonic() + seconds
    logger.warning(
        "could not record the end of execution %s (%s, it %s); retrying for up to %s s",
        execution.pk,
        failure,
        execution.status,
        seconds,
    )
    _note(execution, retrying=True, seconds=seconds)
    delay = FIRST_DELAY
    while (remaining := deadline - time.monotonic()) > 0 and not (give_up and give_up()):
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)
        try:
            connection.close()  # a connection the outage cut is of no use
            execution.write_end()
        except DatabaseError:
            continue
        with contextlib.suppress(Exception):
            cache.delete(note_key(execution.pk))
        logger.info("recorded the end of execution %s after retrying", execution.pk)
        return True
    logger.error("could not record the end of execution %s in the database", execution.pk)
    _note(execution, retrying=False, seconds=seconds)
    return False


def _note(execution: Execution, *, retrying: bool, seconds: int) -> None:
    note = {"status": execution.status, "retrying": retrying, "seconds": seconds}
    with contextlib.suppress(Exception):  # the cache down too: a cancel then just waits
        cache.set(note_key(execution.pk), note, seconds + NOTE_SECONDS)


def unrecorded(execution_id: int) -> str | None:
    """What a cancel of this running row should be told when its command has ended but its
    end is not in the database (the note record_end left), else None."""
    try:
        note = cache.get(note_key(execution_id))
    except Exception:
        return None
    if not isinstance(note, dict):
        return None
    status, seconds = note.get("status"), note.get("seconds")
    if note.get("retrying"):
        return (
            f"Execution {execution_id} is not running: it ended ({status}), but the database "
            f"did not take its result, and the process that ran it is retrying the write "
            f"(for up to {seconds} s from the end). GET it again shortly."
        )
    return (
        f"Execution {execution_id} is not running: it ended ({status}), but the database did "
        f"not take its result within {seconds} s, so its row says running until the process "
        "that ran it stops (the row then becomes interrupted). The caller that waited for it "
        "got the result with a 503."
    )


def not_recorded(execution: Execution) -> ResultNotRecorded:
    """503 `unavailable` carrying the result of a run whose end the database never took."""
    seconds = settings.HOMELAB_RECORD_RETRY_SECONDS
    error = ResultNotRecorded(
        f"Execution {execution.pk} ran and ended ({execution.status}), but the database did "
        f"not take its result within {seconds} s (HOMELAB_RECORD_RETRY_SECONDS), so the "
        "audit trail does not show it: the result is in this answer. Check the database "
        "(DATABASE_URL); the row becomes interrupted when this process stops."
    )
    error.extra.update(result_frame_fields(execution))
    return error
