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
from commands.live import sockets
from commands.live.tickets import redeem_ticket
from commands.models import Execution, parse_id
from commands.results import Frame, result_frame, stored_frames

POLL_SECONDS = 2.0  # a subscriber re-checks the row this often when no frame arrives

# WebSocket close codes (RFC 6455 leaves 4000-4999 to applications).
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

Send = Callable[[Frame], Awaitable[None]]


async def follow(execution_id: int, send: Send, wake: asyncio.Event) -> None:
    """Send every frame of the execution from the start, once, in order, ending with result."""
    backend = framelog.backend()
    log = framelog.execution_log(execution_id)
    cursor, idle = 0, False
    while True:
        wake.clear()  # before reading: a frame appended after the read sets it again
        frames = await backend.aread(log, cursor)
        if frames:
            for frame in frames:
                await send(frame)
                if frame.ends_stream:
                    return
            cursor, idle = cursor + len(frames), False
            continue
        if frames is None or idle:
            # No log (expired, or the run is elsewhere and not started yet), or nothing for
            # a while (its process may have died): the row says whether it is over.
            row = await _load(execution_id)
            if row is None:
                return
            if row.status != Execution.Status.RUNNING:
                if await backend.aread(log, cursor):
                    continue  # the result is on its way through the log
                for frame in stored_frames(row) if cursor == 0 else [result_frame(row)]:
                    await send(frame)
                return
        try:
            await asyncio.wait_for(wake.wait(), POLL_SECONDS)
            idle = False
        except TimeoutError:
            idle = True


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
