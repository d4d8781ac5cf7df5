"""Following a stream: who may watch an execution, and replaying its frame log to them.

The consumer (consumers.py) stays thin: it authorizes with `authorize`, then hands the
socket to `follow`, which replays the frame log from the start and then waits for more.
A frame is recognised by its type (commands/results.py), never by its text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from commands import scopes
from commands.engine import framelog
from commands.fleet import service as fleet
from commands.live import sockets
from commands.live.tickets import redeem_ticket
from commands.models import Batch, Execution, parse_id
from commands.results import Frame, FrameType, result_frame, stored_frames

POLL_SECONDS = 2.0  # a subscriber re-checks the row this often when no frame arrives

# WebSocket close codes (RFC 6455 leaves 4000-4999 to applications).
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

Send = Callable[[Frame], Awaitable[None]]


async def follow(execution_id: int, send: Send, wake: asyncio.Event) -> None:
    """Send every frame of the execution from the start, once, in order, ending with result."""

    async def ended(cursor: int) -> list[Frame] | None:
        row = await _load(execution_id)
        if row is None:
            return []
        if row.status == Execution.Status.RUNNING:
            return None
        return stored_frames(row) if cursor == 0 else [result_frame(row)]

    await follow_log(framelog.execution_log(execution_id), send, wake, ended, FrameType.RESULT)


async def follow_batch(batch_id: int, send: Send, wake: asyncio.Event) -> None:
    """Send every frame of the batch (every target's output and result) from the start,
    once, in order, ending with its summary."""

    async def ended(cursor: int) -> list[Frame] | None:
        return await _batch_tail(batch_id, cursor)

    await follow_log(framelog.batch_log(batch_id), send, wake, ended, FrameType.SUMMARY)


async def follow_log(
    log: str,
    send: Send,
    wake: asyncio.Event,
    ended: Callable[[int], Awaitable[list[Frame] | None]],
    last: FrameType,
) -> None:
    """Replay log from the start, then wait for more, until the frame of type `last` (an
    execution's result, a batch's summary: a batch's log also holds each target's result).

    When the log is missing (expired, or the run is elsewhere and not started yet) or
    quiet for a while (its process may have died), ended(cursor) says from the database
    whether it is over: None, not yet; else the frames still to send (all of them from
    the row when nothing was sent yet, else its last one), and the stream ends."""
    backend = framelog.backend()
    cursor, idle = 0, False
    while True:
        wake.clear()  # before reading: a frame appended after the read sets it again
        frames = await backend.aread(log, cursor)
        if frames:
            for frame in frames:
                await send(frame)
                if frame.type == last:
                    return
            cursor, idle = cursor + len(frames), False
            continue
        if frames is None or idle:
            tail = await ended(cursor)
            if tail is not None:
                if await backend.aread(log, cursor):
                    continue  # the end is on its way through the log
                for frame in tail:
                    await send(frame)
                return
        try:
            await asyncio.wait_for(wake.wait(), POLL_SECONDS)
            idle = False
        except TimeoutError:
            idle = True


@database_sync_to_async
def _batch_tail(batch_id: int, cursor: int) -> list[Frame] | None:
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None:
        return []
    if batch.status == Batch.Status.RUNNING:
        return None
    frames = fleet.stored_frames(batch)
    return frames if cursor == 0 else frames[-1:]


@database_sync_to_async
def _load(execution_id: int) -> Execution | None:
    return Execution.objects.filter(pk=execution_id).first()


@database_sync_to_async
def authorize(scope: dict, execution_ref: str) -> int | None:
    """None when the socket may follow the execution, else the close code to refuse with."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    # An id the database can hold, or 0 (no row has it): ASCII digits only.
    pk = parse_id(execution_ref) or 0
    if "ticket" in query:
        holder = redeem_ticket(query["ticket"][0])
        if holder is None:
            return CLOSE_NOT_AUTHENTICATED
        allowed = pk != 0 and holder.get("stream") == framelog.execution_log(pk)
    else:
        who = sockets.identify(scope)
        if who is None:
            return CLOSE_NOT_AUTHENTICATED
        # A key reads what GET executions/ shows it (scopes.filter_executions); a session,
        # staff. Checked on the id as given: an id that does not exist is refused the same.
        if who.api_key is not None:
            visible = scopes.filter_executions(Execution.objects.filter(pk=pk), who.api_key)
            allowed = not scopes.limits_servers(who.api_key) or visible.exists()
        else:
            allowed = scopes.may_read(who.user)
    if not allowed:  # before the lookup: no telling whether the id exists
        return CLOSE_FORBIDDEN
    if not Execution.objects.filter(pk=pk).exists():
        return CLOSE_NOT_FOUND
    return None


@database_sync_to_async
def authorize_batch(scope: dict, batch_ref: str) -> int | None:
    """As authorize, for a batch: None when the socket may follow it, else the close code.
    A key limited to servers may follow the batches it started."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    pk = parse_id(batch_ref) or 0
    if "ticket" in query:
        holder = redeem_ticket(query["ticket"][0])
        if holder is None:
            return CLOSE_NOT_AUTHENTICATED
        allowed = pk != 0 and holder.get("stream") == framelog.batch_log(pk)
    else:
        who = sockets.identify(scope)
        if who is None:
            return CLOSE_NOT_AUTHENTICATED
        if who.api_key is not None:
            visible = fleet.visible_batches(Batch.objects.filter(pk=pk), who)
            allowed = not scopes.limits_servers(who.api_key) or visible.exists()
        else:
            allowed = scopes.may_read(who.user)
    if not allowed:
        return CLOSE_FORBIDDEN
    if not Batch.objects.filter(pk=pk).exists():
        return CLOSE_NOT_FOUND
    return None
