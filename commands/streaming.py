"""The stream of one execution: publishing its output, following it, tickets and who may watch.

The consumer (consumers.py) stays thin: it authenticates with `authorize`, then hands the
socket to `follow`, which replays the frame log from the start and then waits for more.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.core.cache import cache

from commands import live, scopes, sockets, ssh
from commands.models import ApiKey, Execution

logger = logging.getLogger(__name__)

TICKET_SECONDS = 60
MAX_ID = 2**63 - 1  # the largest id either database stores
POLL_SECONDS = 2.0  # a subscriber re-checks the row this often when no frame arrives
SNAPSHOT_EVERY = 0.25  # seconds between snapshots of the output so far (GET while running)

# WebSocket close codes (RFC 6455 leaves 4000-4999 to applications).
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class LiveOutput:
    """The on_output callback of one run: frames for the stream, a snapshot for GET.

    Called from the runner thread with raw bytes per stream. The stream carries the first
    `stream_limit` bytes of each stream, decoded incrementally, then one `truncated` frame;
    the snapshot keeps the beginning and the end (`output_limit`), as the row will.
    """

    def __init__(self, execution_id: int, *, stream_limit: int, output_limit: int) -> None:
        self.execution_id = execution_id
        self.backend = live.backend()
        self.stream_limit = stream_limit
        self._sent = {"stdout": 0, "stderr": 0}
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in self._sent
        }
        self._cut: set[str] = set()
        self._kept = {name: ssh.CappedOutput(output_limit) for name in self._sent}
        self._snapshot_at = 0.0
        self._lock = threading.Lock()  # the runner thread feeds, a timer may snapshot
        self._timer: threading.Timer | None = None

    def __call__(self, stream: str, data: bytes) -> None:
        frames = []
        room = self.stream_limit - self._sent[stream]
        if room > 0:
            piece = data[:room]
            self._sent[stream] += len(piece)
            text = self._decoders[stream].decode(piece, final=len(data) >= room)
            if text:
                frames.append(live.frame("output", stream=stream, data=ssh.clean_text(text)))
        if len(data) > room and stream not in self._cut:
            self._cut.add(stream)
            frames.append(live.frame("truncated", stream=stream))
        self.backend.append(self.execution_id, frames)
        with self._lock:
            self._kept[stream].feed(data)
            due = self._snapshot_at + SNAPSHOT_EVERY - time.monotonic()
            if due > 0:
                # Output within the interval is snapshotted when it ends, not only when
                # more output comes: a command may print and then be quiet for minutes.
                if self._timer is None:
                    self._timer = threading.Timer(due, self._publish_snapshot)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        with self._lock:
            self._timer = None
            self._snapshot_at = time.monotonic()
            fields = self.snapshot()
        try:
            self.backend.set_snapshot(self.execution_id, fields)
        except Exception:  # GET then shows an older snapshot; the row gets everything
            logger.warning("could not publish the output so far of execution %s", self.execution_id)

    def snapshot(self) -> dict[str, Any]:
        out, err = self._kept["stdout"], self._kept["stderr"]
        return {
            "stdout": out.text(),
            "stderr": err.text(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
        }

    def flush(self) -> None:
        """Publish what the decoders still hold and the last snapshot (at the end of a run)."""
        frames = []
        for stream, decoder in self._decoders.items():
            if stream not in self._cut and (text := decoder.decode(b"", final=True)):
                frames.append(live.frame("output", stream=stream, data=ssh.clean_text(text)))
        self.backend.append(self.execution_id, frames)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self._publish_snapshot()


def result_fields(execution: Execution) -> dict[str, Any]:
    """The result frame's fields: the synchronous 200 body, plus status and any error."""
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "exit_code": execution.exit_code,
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "duration_ms": execution.duration_ms,
        "stdout_truncated": execution.stdout_truncated,
        "stderr_truncated": execution.stderr_truncated,
        "error_code": execution.error_code,
        "error_detail": execution.error_detail,
    }


def stored_frames(execution: Execution) -> list[str]:
    """A finished execution whose live log is gone: its stored output, then the result."""
    frames = []
    for stream in ("stdout", "stderr"):
        if text := getattr(execution, stream):
            frames.append(live.frame("output", stream=stream, data=text))
        if getattr(execution, f"{stream}_truncated"):
            frames.append(live.frame("truncated", stream=stream))
    frames.append(live.frame("result", **result_fields(execution)))
    return frames


async def follow(
    execution_id: int, send: Callable[[str], Awaitable[None]], wake: asyncio.Event
) -> None:
    """Send every frame of the execution from the start, once, in order, ending with result."""
    backend = live.backend()
    cursor, idle = 0, False
    while True:
        wake.clear()  # before reading: a frame appended after the read sets it again
        frames = await backend.aread(execution_id, cursor)
        if frames:
            for item in frames:
                await send(item)
                if item.startswith('{"type":"result"'):
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
                if await backend.aread(execution_id, cursor):
                    continue  # the result is on its way through the log
                await _send_all(send, stored_frames(row) if cursor == 0 else _result_only(row))
                return
        try:
            await asyncio.wait_for(wake.wait(), POLL_SECONDS)
            idle = False
        except TimeoutError:
            idle = True


def _result_only(execution: Execution) -> list[str]:
    return [live.frame("result", **result_fields(execution))]


async def _send_all(send: Callable[[str], Awaitable[None]], frames: list[str]) -> None:
    for item in frames:
        await send(item)


@database_sync_to_async
def _load(execution_id: int) -> Execution | None:
    return Execution.objects.filter(pk=execution_id).first()


# --- tickets --------------------------------------------------------------------------------
def _ticket_key(ticket: str) -> str:
    return "stream-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(execution: Execution, *, api_key: ApiKey | None, user: Any) -> str:
    """A random single-use ticket to stream this execution, valid TICKET_SECONDS; only its
    hash is stored (in the cache shared by the workers)."""
    ticket = secrets.token_urlsafe(32)
    holder = {
        "execution_id": execution.pk,
        "api_key_id": api_key.pk if api_key else None,
        "user_id": user.pk if user is not None and user.is_authenticated else None,
    }
    cache.set(_ticket_key(ticket), holder, TICKET_SECONDS)
    return ticket


def redeem_ticket(ticket: str) -> dict[str, Any] | None:
    """The ticket's holder, once: the first redeemer deletes it, any later one gets None."""
    key = _ticket_key(ticket)
    holder = cache.get(key)
    if holder is None or not cache.delete(key):
        return None
    return holder


# --- who may watch ----------------------------------------------------------------------
@database_sync_to_async
def authorize(scope: dict, execution_id: str) -> int | None:
    """None when the socket may follow the execution, else the close code to refuse with."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    # An id the database can hold, or 0 (no row has it): a 30-digit id overflows SQLite.
    pk = int(execution_id) if execution_id.isascii() and execution_id.isdecimal() else 0
    pk = pk if pk <= MAX_ID else 0
    if "ticket" in query:
        holder = redeem_ticket(query["ticket"][0])
        if holder is None:
            return CLOSE_NOT_AUTHENTICATED
        allowed = str(holder["execution_id"]) == execution_id
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
            allowed = who.user.is_staff
    if not allowed:  # before the lookup: no telling whether the id exists
        return CLOSE_FORBIDDEN
    if not Execution.objects.filter(pk=pk).exists():
        return CLOSE_NOT_FOUND
    return None
