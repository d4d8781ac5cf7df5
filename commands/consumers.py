"""WebSocket consumers: thin. Authenticate, subscribe, hand the socket to streaming.follow."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.websocket import AsyncWebsocketConsumer

from commands import live, streaming


class ExecutionStreamConsumer(AsyncWebsocketConsumer):
    """`ws/v1/executions/{id}/`: the execution's frames from the start, then close 1000."""

    subscription: live.Subscription | None = None
    task: asyncio.Task | None = None

    async def connect(self) -> None:
        # Accept first: a refusal is then a close code the client can read (4401/4403/4404),
        # where a refused handshake would only be an HTTP 403.
        await self.accept()
        execution_id = self.scope["url_route"]["kwargs"]["execution_id"]
        refusal = await streaming.authorize(self.scope, execution_id)
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.subscription = live.Subscription(int(execution_id), asyncio.get_running_loop())
        await live.backend().subscribe(self.subscription, self.channel_name)
        self.task = asyncio.create_task(self.stream())

    async def stream(self) -> None:
        await streaming.follow(
            self.subscription.execution_id, self.send_text, self.subscription.event
        )
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
