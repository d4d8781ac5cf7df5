"""WebSocket consumers: thin. Authenticate, subscribe, hand the socket to streaming.follow."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from commands import scopes
from commands.engine import framelog
from commands.exceptions import HomelabError, ServerNotFound
from commands.live import sockets, streaming
from commands.observability import metrics
from commands.requests import Caller
from commands.results import Frame, error_frame, started_frame
from commands.services import find_server

logger = logging.getLogger(__name__)


class ExecutionStreamConsumer(AsyncWebsocketConsumer):
    """`ws/v1/executions/{id}/`: the execution's frames from the start, then close 1000."""

    subscription: framelog.Subscription | None = None
    task: asyncio.Task | None = None

    async def connect(self) -> None:
        """Refuse (4401/4403/4404) or start following; accept first either way."""
        # Accept first: a refusal is then a close code the client can read (4401/4403/4404),
        # where a refused handshake would only be an HTTP 403.
        await self.accept()
        execution_ref = self.scope["url_route"]["kwargs"]["execution_id"]
        refusal = await streaming.authorize(self.scope, execution_ref)
        if refusal is not None:
            await self.close(code=refusal)
            return
        await self.follow(int(execution_ref))

    async def follow(self, execution_id: int) -> None:
        log = framelog.execution_log(execution_id)
        self.subscription = framelog.Subscription(log, asyncio.get_running_loop())
        metrics.STREAM_SUBSCRIBERS.inc()  # until disconnect, which follows any subscription
        await framelog.backend().subscribe(self.subscription, self.channel_name)
        self.task = asyncio.create_task(self.stream(execution_id))

    async def stream(self, execution_id: int) -> None:
        try:
            await streaming.follow(execution_id, self.send_frame, self.subscription.event)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. Redis or the database gone: say so, never go silent
            logger.exception("stream of execution %s failed", execution_id)
            await self.close(code=1011)
            return
        await self.close(code=1000)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(text_data=frame.text)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        return  # the stream is one-way; what a client sends is ignored

    async def stream_wake(self, event: dict) -> None:
        """A group message: new frames are in the log (Redis profile)."""
        if self.subscription is not None:
            self.subscription.event.set()

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.subscription is not None:
            metrics.STREAM_SUBSCRIBERS.dec()
            with contextlib.suppress(Exception):
                await framelog.backend().unsubscribe(self.subscription, self.channel_name)


class BatchStreamConsumer(ExecutionStreamConsumer):
    """`ws/v1/batches/{id}/`: every target's output frames (with `server`) and result as it
    ends, from the start, then the batch's `summary` and close 1000."""

    async def connect(self) -> None:
        await self.accept()
        batch_ref = self.scope["url_route"]["kwargs"]["batch_id"]
        refusal = await streaming.authorize_batch(self.scope, batch_ref)
        if refusal is not None:
            await self.close(code=refusal)
            return
        batch_id = int(batch_ref)
        self.subscription = framelog.Subscription(
            framelog.batch_log(batch_id), asyncio.get_running_loop()
        )
        await framelog.backend().subscribe(self.subscription, self.channel_name)
        self.task = asyncio.create_task(self.stream_batch(batch_id))

    async def stream_batch(self, batch_id: int) -> None:
        try:
            await streaming.follow_batch(batch_id, self.send_frame, self.subscription.event)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("stream of batch %s failed", batch_id)
            await self.close(code=1011)
            return
        await self.close(code=1000)


FIRST_FRAME_SECONDS = 30
TOO_SLOW = f"Send the command as the first frame within {FIRST_FRAME_SECONDS} s."


class ExecuteConsumer(ExecutionStreamConsumer):
    """`ws/v1/servers/{id}/commands/execute`, for a one-connection client: the first text
    frame is `{"command", "action_type"}`; then `{"type": "started", "execution_id"}` and the
    same frames as ws/v1/executions/{id}/. A refusal is an `error` frame, then a close
    with 4000 + the HTTP status the endpoint would answer (4400, 4429, 4503, ...)."""

    caller: Caller | None = None
    server_ref = ""
    deadline: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        await self.accept()
        self.server_ref = self.scope["url_route"]["kwargs"]["server"]
        who, close_code = await self.identify(self.server_ref)
        if close_code is not None:
            await self.close(code=close_code)
            return
        # A server-limited key learns nothing at connect about servers outside its
        # scope, existing or not: its first frame gets 403 key_scope, as over HTTP.
        self.caller = who
        self.deadline = asyncio.get_running_loop().call_later(
            FIRST_FRAME_SECONDS, lambda: asyncio.ensure_future(self.give_up())
        )

    async def give_up(self) -> None:
        """No command arrived in time: a connection is not held open for nothing."""
        if self.caller is not None:
            self.caller = None
            await self.send(text_data=error_frame("timeout", TOO_SLOW).text)
            await self.close(code=4408)

    async def disconnect(self, code: int) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        await super().disconnect(code)

    @database_sync_to_async
    def identify(self, server_ref: str) -> tuple[Caller | None, int | None]:
        """(caller, None) when the socket may send its command, else (None, close code)."""
        who = sockets.identify(self.scope)
        if who is None:
            return None, streaming.CLOSE_NOT_AUTHENTICATED
        # A session user needs commands.execute_command; has_perm reads the database, so
        # it is decided here, off the event loop. An API key's scopes decide later.
        if who.api_key is None and not scopes.may_execute(who.user):
            return None, streaming.CLOSE_FORBIDDEN
        try:
            find_server(server_ref, who)
        except ServerNotFound:
            return None, streaming.CLOSE_NOT_FOUND
        except HomelabError:
            return None, 4500
        return who, None

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.caller is None or self.subscription is not None:
            return  # one command per connection; later frames are ignored
        caller, self.caller = self.caller, None
        self.deadline.cancel()
        # Not on the one thread all sockets share for the ORM: this may wait for a slot.
        started = await database_sync_to_async(sockets.start_execution, thread_sensitive=False)(
            caller, self.server_ref, text_data
        )
        if isinstance(started, sockets.Refusal):
            await self.send(text_data=started.text)
            await self.close(code=started.close_code)
            return
        await self.send(text_data=started_frame(started).text)
        await self.follow(started)
