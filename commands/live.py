"""Live executions: the frame log a stream replays, wake-ups, snapshots and cancel requests.

Each execution has a log of JSON frames (output up to HOMELAB_STREAM_LIMIT per stream, one
`truncated` frame per cut stream, then the `result`). A subscriber reads the log from the
start with a cursor and waits for a wake-up when it has caught up, so a late or reconnecting
client gets everything once, in order, and a slow one never holds up the command (it just
reads later). Two backends, chosen by settings:

- `LocalBackend` (the embedded default): the log in this process's memory; wake-ups are
  set straight on the subscriber's event loop.
- `RedisBackend` (REDIS_URL): the log is a Redis list, so any worker can replay it; wake-ups
  go to the channel-layer group `execution.<namespace>.<id>`, and a cancel request goes to
  the channel of the process running the command (see runner.channel_name_for).

Why not the in-memory channel layer for the embedded case: its queues belong to one event
loop, and output is produced on runner threads, which have none.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


@functools.cache
def namespace() -> str:
    """What tells this deployment's executions from another's in a shared Redis: ids
    count from 1 in every database, so the database names the deployment."""
    database = settings.DATABASES["default"]
    where = "|".join(str(database.get(part, "")) for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def group_name(execution_id: int) -> str:
    return f"execution.{namespace()}.{execution_id}"


def frame(kind: str, **fields: Any) -> str:
    # ensure_ascii=False: U+FFFD and other non-ASCII text cost 1-3 bytes, not 6.
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)


class Subscription:
    """A subscriber's wake-up: `event` is set (on the subscriber's loop) when frames arrive."""

    def __init__(self, execution_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.execution_id = execution_id
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class LocalBackend:
    """The frame log and snapshots in this process (one process serves everything)."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._lock = threading.Lock()
        self._logs: dict[int, list[str]] = {}
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._ended: dict[int, float] = {}  # execution id -> when its log may be dropped
        self._subscribers: dict[int, set[Subscription]] = {}

    def start(self, execution_id: int, ttl: float) -> None:
        with self._lock:
            self._expire(time.monotonic())
            self._logs.setdefault(execution_id, [])

    def append(self, execution_id: int, frames: list[str]) -> None:
        with self._lock:
            log = self._logs.get(execution_id)
            if log is None:
                return
            log.extend(frames)
            subscribers = list(self._subscribers.get(execution_id, ()))
        for subscriber in subscribers:
            subscriber.wake()

    def read(self, execution_id: int, after: int) -> list[str] | None:
        """Frames from index `after` on; None when there is no log (never, or expired)."""
        with self._lock:
            log = self._logs.get(execution_id)
            return None if log is None else log[after:]

    def end(self, execution_id: int) -> None:
        with self._lock:
            self._snapshots.pop(execution_id, None)
            now = time.monotonic()
            self._expire(now)
            self._ended[execution_id] = now + self.retention

    def set_snapshot(self, execution_id: int, fields: dict[str, Any]) -> None:
        with self._lock:
            if execution_id in self._logs and execution_id not in self._ended:
                self._snapshots[execution_id] = fields

    def snapshot(self, execution_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._snapshots.get(execution_id)

    def _expire(self, now: float) -> None:
        for execution_id, when in list(self._ended.items()):
            if when <= now:
                del self._ended[execution_id]
                self._logs.pop(execution_id, None)

    async def subscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        with self._lock:
            self._subscribers.setdefault(subscription.execution_id, set()).add(subscription)

    async def unsubscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.execution_id, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(subscription.execution_id, None)

    async def aread(self, execution_id: int, after: int) -> list[str] | None:
        return self.read(execution_id, after)

    def send_cancel(self, runner_identity: str, execution_id: int) -> bool:
        return False  # one process: a run that is not in this runner is nowhere

    def listen_for_cancels(self, identity: str, on_cancel: Callable[[int], None]) -> None:
        return


class Bridge:
    """One event loop on a daemon thread: the channel layer, used from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="homelab-channel-layer", daemon=True
        )
        self._thread.start()

    def call(self, coroutine: Any, timeout: float | None = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def spawn(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop)


class RedisBackend:
    """The frame log in Redis; wake-ups and cancels through the channel layer."""

    SNAPSHOT_SECONDS = 3600 + 60  # past the longest rule timeout (3600 s)

    def __init__(self, url: str, retention: float) -> None:
        import redis

        self.retention = int(retention)
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._bridge: Bridge | None = None
        self._bridge_lock = threading.Lock()
        self._pending: set[int] = set()  # wake-ups scheduled but not yet sent
        self._pending_lock = threading.Lock()

    @staticmethod
    def _key(execution_id: int, part: str = "frames") -> str:
        return f"homelab:live:{namespace()}:{execution_id}:{part}"

    def bridge(self) -> Bridge:
        with self._bridge_lock:
            if self._bridge is None:
                self._bridge = Bridge()
            return self._bridge

    def start(self, execution_id: int, ttl: float) -> None:
        # An empty list does not exist in Redis: a placeholder frame marks "the log exists".
        key = self._key(execution_id)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.rpush(key, frame("started", execution_id=execution_id))
        pipe.expire(key, int(ttl) + self.retention)
        pipe.execute()

    def append(self, execution_id: int, frames: list[str]) -> None:
        if frames:
            self.redis.rpush(self._key(execution_id), *frames)
            self._wake(execution_id)

    def read(self, execution_id: int, after: int) -> list[str] | None:
        key = self._key(execution_id)
        pipe = self.redis.pipeline()
        pipe.exists(key)
        pipe.lrange(key, after + 1, -1)  # index 0 is the placeholder
        exists, frames = pipe.execute()
        return [item.decode() for item in frames] if exists else None

    async def aread(self, execution_id: int, after: int) -> list[str] | None:
        return await asyncio.to_thread(self.read, execution_id, after)

    def end(self, execution_id: int) -> None:
        pipe = self.redis.pipeline()
        pipe.expire(self._key(execution_id), self.retention)
        pipe.delete(self._key(execution_id, "snapshot"))
        pipe.execute()

    def set_snapshot(self, execution_id: int, fields: dict[str, Any]) -> None:
        # Deleted at the end; the expiry only matters if the runner dies mid-command.
        self.redis.set(
            self._key(execution_id, "snapshot"), json.dumps(fields), ex=self.SNAPSHOT_SECONDS
        )

    def snapshot(self, execution_id: int) -> dict[str, Any] | None:
        raw = self.redis.get(self._key(execution_id, "snapshot"))
        return json.loads(raw) if raw else None

    def _wake(self, execution_id: int) -> None:
        # At most one wake-up in flight per execution: a burst of output costs one message.
        with self._pending_lock:
            if execution_id in self._pending:
                return
            self._pending.add(execution_id)
        self.bridge().spawn(self._send_wake(execution_id))

    async def _send_wake(self, execution_id: int) -> None:
        from channels.layers import get_channel_layer

        with self._pending_lock:  # before sending: frames appended from now get a new one
            self._pending.discard(execution_id)
        try:
            await get_channel_layer().group_send(
                group_name(execution_id), {"type": "execution.wake"}
            )
        except Exception:  # subscribers still poll; never let this kill the loop
            logger.warning("could not wake the subscribers of execution %s", execution_id)

    async def subscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        from channels.layers import get_channel_layer

        await get_channel_layer().group_add(group_name(subscription.execution_id), channel_name)

    async def unsubscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        from channels.layers import get_channel_layer

        await get_channel_layer().group_discard(group_name(subscription.execution_id), channel_name)

    def send_cancel(self, runner_identity: str, execution_id: int) -> bool:
        from channels.layers import get_channel_layer

        from commands.runner import channel_name_for

        message = {"type": "cancel", "execution_id": execution_id}
        self.bridge().call(get_channel_layer().send(channel_name_for(runner_identity), message))
        return True

    def listen_for_cancels(self, identity: str, on_cancel: Callable[[int], None]) -> None:
        from commands.runner import channel_name_for

        self.bridge().spawn(self._listen(channel_name_for(identity), on_cancel))

    async def _listen(self, channel: str, on_cancel: Callable[[int], None]) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The class only: a Redis error's text may carry the URL with its password.
                logger.warning(
                    "the cancel listener lost the channel layer (%s); retrying",
                    type(exc).__name__,
                )
                await asyncio.sleep(1)
                continue
            if message.get("type") == "cancel" and isinstance(message.get("execution_id"), int):
                on_cancel(message["execution_id"])


_backend: LocalBackend | RedisBackend | None = None
_backend_lock = threading.Lock()


def backend() -> LocalBackend | RedisBackend:
    """The process-wide live backend: Redis when REDIS_URL is set, else this process."""
    global _backend
    with _backend_lock:
        if _backend is None:
            retention = settings.HOMELAB_STREAM_RETENTION_SECONDS
            if settings.REDIS_URL:
                _backend = RedisBackend(settings.REDIS_URL, retention)
            else:
                _backend = LocalBackend(retention)
        return _backend


def reset_backend() -> None:
    """Forget the process-wide backend (tests switch settings)."""
    global _backend
    with _backend_lock:
        _backend = None
    namespace.cache_clear()
