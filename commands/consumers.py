"""WebSocket consumers: thin. Authenticate, subscribe, hand the socket to streaming.follow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from commands import live, scopes, sockets, streaming
from commands.permissions import may_execute

logger = logging.getLogger(__name__)


class ExecutionStreamConsumer(AsyncWebsocketConsumer):
    """`ws/v1/executions/{id}/`: the execution's frames from the start, then close 1000."""

    subscription: live.Subscription | None = None
    task: asyncio.Task | None = None

    async def connect(self) -> None:
        """Refuse (4401/4403/4404) or start following; accept first either way."""
        # Accept first: a refusal is then a close code the client can read (4401/4403/4404),
        # where a refused handshake would only be an HTTP 403.
        await self.accept()
        execution_id = self.scope["url_route"]["kwargs"]["execution_id"]
        refusal = await streaming.authorize(self.scope, execution_id)
        if refusal is not None:
            await self.close(code=refusal)
            return
        await self.follow(int(execution_id))

    async def follow(self, execution_id: int) -> None:
        self.subscription = live.Subscription(execution_id, asyncio.get_running_loop())
        await live.backend().subscribe(self.subscription, self.channel_name)
        self.task = asyncio.create_task(self.stream())

    async def stream(self) -> None:
        try:
            await streaming.follow(
                self.subscription.execution_id, self.send_text, self.subscription.event
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. Redis or the database gone: say so, never go silent
            logger.exception("stream of execution %s failed", self.subscription.execution_id)
            await self.close(code=1011)
            return
        await self.close(code=1000)

    async def send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        return  # the stream is one-way; what a client sends is ignored

    async def execution_wake(self, event: dict) -> None:
        """A group message: new frames are in the log (Redis profile)."""
        if self.subscription is not None:
            self.subscription.event.set()

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await live.backend().unsubscribe(self.subscription, self.channel_name)


FIRST_FRAME_SECONDS = 30
TOO_SLOW = f"Send the command as the first frame within {FIRST_FRAME_SECONDS} s."


class ExecuteConsumer(ExecutionStreamConsumer):
    """`ws/v1/servers/{id}/commands/execute`, for a one-connection client: the first text
    frame is `{"command", "action_type"}`; then `{"type": "started", "execution_id"}` and the
    same frames as ws/v1/executions/{id}/. A refusal is an `error` frame, then a close
    with 4000 + the HTTP status the endpoint would answer (4400, 4429, 4503, ...)."""

    caller: sockets.Caller | None = None
    server = None
    server_ref = ""
    deadline: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        await self.accept()
        who, allowed, server = await self.identify(self.scope["url_route"]["kwargs"]["server"])
        if who is None:
            await self.close(code=streaming.CLOSE_NOT_AUTHENTICATED)
        elif not allowed:
            await self.close(code=streaming.CLOSE_FORBIDDEN)
        elif server is None and not scopes.limits_servers(who.api_key):
            await self.close(code=streaming.CLOSE_NOT_FOUND)
        else:
            # A server-limited key learns nothing at connect about servers outside its
            # scope, existing or not: its first frame gets 403 key_scope, as over HTTP.
            self.caller, self.server = who, server
            self.server_ref = self.scope["url_route"]["kwargs"]["server"]
            self.deadline = asyncio.get_running_loop().call_later(
                FIRST_FRAME_SECONDS, lambda: asyncio.ensure_future(self.give_up())
            )

    async def give_up(self) -> None:
        """No command arrived in time: a connection is not held open for nothing."""
        if self.caller is not None:
            self.caller = None
            await self.send(text_data=json.dumps(sockets.refusal(408, "timeout", TOO_SLOW).frame))
            await self.close(code=4408)

    async def disconnect(self, code: int) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        await super().disconnect(code)

    @database_sync_to_async
    def identify(self, server_ref: str):
        """(caller or None, whether it may run commands, server or None)."""
        who = sockets.identify(self.scope)
        # A session user needs commands.execute_command; has_perm reads the database, so
        # it is decided here, off the event loop. An API key's scopes decide later.
        allowed = who is not None and (who.api_key is not None or may_execute(who.user))
        return who, allowed, sockets.find_server(server_ref, who.api_key if who else None)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.caller is None or self.subscription is not None:
            return  # one command per connection; later frames are ignored
        caller, self.caller = self.caller, None
        self.deadline.cancel()
        # Not on the one thread all sockets share for the ORM: this may wait for a slot.
        started = await database_sync_to_async(sockets.start_execution, thread_sensitive=False)(
            caller, self.server, text_data, server_ref=self.server_ref
        )
        if isinstance(started, sockets.Refusal):
            await self.send(text_data=json.dumps(started.frame))
            await self.close(code=started.close_code)
            return
        await self.send(text_data=live.frame("started", execution_id=started))
        await self.follow(started)
