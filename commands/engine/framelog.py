"""The frame logs live streams replay, their wake-ups, snapshots and the cancel bus.

Each execution (and each batch) has a log of typed frames (commands/results.py): output up
to HOMELAB_STREAM_LIMIT per stream, one `truncated` frame per cut stream, then the
`result` (a batch: every target's frames, then its `summary`). A subscriber reads a log
from the start with a cursor and waits for a wake-up when it has caught up, so a late or
reconnecting client gets everything once, in order, and a slow one never holds up the
command (it just reads later). A log is named `execution.<id>` or `batch.<id>`
(`execution_log`, `batch_log`). Two backends, chosen by settings:

- `LocalBackend` (the embedded default): the logs in this process's memory, as Frame
  objects (a frame in two logs, a target's and its batch's, is one object); wake-ups are
  set straight on the subscriber's event loop.
- `RedisBackend` (REDIS_URL): a log is a Redis list of JSON frames, so any worker can
  replay it; wake-ups go to the channel-layer group `<kind>.<namespace>.<id>`, and a cancel
  request goes to the channel of the process running the command (runner.channel_name_for).

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

from commands.engine.process import ProcessWide
from commands.engine.runner import channel_name_for
from commands.results import Frame

logger = logging.getLogger(__name__)


@functools.cache
def namespace() -> str:
    """What tells this deployment's executions from another's in a shared Redis: ids
    count from 1 in every database, so the database names the deployment."""
    database = settings.DATABASES["default"]
    where = "|".join(str(database.get(part, "")) for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def execution_log(execution_id: int) -> str:
    return f"execution.{execution_id}"


def batch_log(batch_id: int) -> str:
    return f"batch.{batch_id}"


def group_name(log: str) -> str:
    kind, _, number = log.partition(".")
    return f"{kind}.{namespace()}.{number}"


class Subscription:
    """A subscriber's wake-up: `event` is set (on the subscriber's loop) when frames arrive."""

    def __init__(self, log: str, loop: asyncio.AbstractEventLoop) -> None:
        self.log = log
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class LocalBackend:
    """The frame logs and snapshots in this process (one process serves everything)."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._lock = threading.Lock()
        self._logs: dict[str, list[Frame]] = {}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._ended: dict[str, float] = {}  # log -> when it may be dropped
        self._subscribers: dict[str, set[Subscription]] = {}

    def start(self, log: str, ttl: float) -> None:
        with self._lock:
            self._expire(time.monotonic())
            self._logs.setdefault(log, [])

    def append(self, log: str, frames: list[Frame]) -> None:
        if not frames:
            return
        with self._lock:
            entries = self._logs.get(log)
            if entries is None:
                return
            entries.extend(frames)
            subscribers = list(self._subscribers.get(log, ()))
        for subscriber in subscribers:
            subscriber.wake()

    def read(self, log: str, after: int) -> list[Frame] | None:
        """Frames from index `after` on; None when there is no log (never, or expired)."""
        with self._lock:
            entries = self._logs.get(log)
            return None if entries is None else entries[after:]

    def end(self, log: str) -> None:
        with self._lock:
            self._snapshots.pop(log, None)
            now = time.monotonic()
            self._expire(now)
            self._ended.pop(log, None)  # kept in order of expiry (see _expire)
            self._ended[log] = now + self.retention

    def finish(self, log: str, frames: list[Frame]) -> None:
        """append(frames), then end(log)."""
        self.append(log, frames)
        self.end(log)

    def set_snapshot(self, log: str, fields: dict[str, Any]) -> None:
        with self._lock:
            if log in self._logs and log not in self._ended:
                self._snapshots[log] = fields

    def snapshot(self, log: str) -> dict[str, Any] | None:
        with self._lock:
            return self._snapshots.get(log)

    def _expire(self, now: float) -> None:
        # Every log is kept for the same retention after its end, so _ended is in order of
        # expiry: drop from its start, and stop at the first log still kept (a loop over
        # all of them cost a start and an end 0.1 ms per 1,000 logs kept).
        while self._ended:
            log, when = next(iter(self._ended.items()))
            if when > now:
                return
            del self._ended[log]
            self._logs.pop(log, None)

    async def subscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        with self._lock:
            self._subscribers.setdefault(subscription.log, set()).add(subscription)

    async def unsubscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.log, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(subscription.log, None)

    async def aread(self, log: str, after: int) -> list[Frame] | None:
        return self.read(log, after)

    def send_cancel(self, runner_identity: str, message: dict[str, Any]) -> bool:
        return False  # one process: a run that is not in this runner is nowhere

    def listen_for_cancels(self, identity: str, on_cancel: Callable[[dict], None]) -> None:
        return

    def close(self) -> None:
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
    """The frame logs in Redis; wake-ups and cancels through the channel layer."""

    SNAPSHOT_SECONDS = 3600 + 60  # past the longest rule timeout (3600 s)

    def __init__(self, url: str, retention: float) -> None:
        import redis

        self.retention = int(retention)
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._bridge: Bridge | None = None
        self._bridge_lock = threading.Lock()
        self._pending: set[str] = set()  # wake-ups scheduled but not yet sent
        self._pending_lock = threading.Lock()

    @staticmethod
    def _key(log: str, part: str = "frames") -> str:
        return f"homelab:live:{namespace()}:{log}:{part}"

    def bridge(self) -> Bridge:
        with self._bridge_lock:
            if self._bridge is None:
                self._bridge = Bridge()
            return self._bridge

    def start(self, log: str, ttl: float) -> None:
        # An empty list does not exist in Redis: a placeholder marks "the log exists".
        key = self._key(log)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.rpush(key, "{}")
        pipe.expire(key, int(ttl) + self.retention)
        pipe.execute()

    def append(self, log: str, frames: list[Frame]) -> None:
        if frames:
            self.redis.rpush(self._key(log), *(frame.data for frame in frames))
            self._wake(log)

    def read(self, log: str, after: int) -> list[Frame] | None:
        key = self._key(log)
        pipe = self.redis.pipeline()
        pipe.exists(key)
        pipe.lrange(key, after + 1, -1)  # index 0 is the placeholder
        exists, frames = pipe.execute()
        return [Frame.decode(item) for item in frames] if exists else None

    async def aread(self, log: str, after: int) -> list[Frame] | None:
        return await asyncio.to_thread(self.read, log, after)

    def end(self, log: str) -> None:
        self.finish(log, [])

    def finish(self, log: str, frames: list[Frame]) -> None:
        """append(frames), then end(log): one round trip."""
        pipe = self.redis.pipeline()
        if frames:
            pipe.rpush(self._key(log), *(frame.data for frame in frames))
        pipe.expire(self._key(log), self.retention)
        pipe.delete(self._key(log, "snapshot"))
        pipe.execute()
        if frames:
            self._wake(log)

    def set_snapshot(self, log: str, fields: dict[str, Any]) -> None:
        # Deleted at the end; the expiry only matters if the runner dies mid-command.
        self.redis.set(self._key(log, "snapshot"), json.dumps(fields), ex=self.SNAPSHOT_SECONDS)

    def snapshot(self, log: str) -> dict[str, Any] | None:
        raw = self.redis.get(self._key(log, "snapshot"))
        return json.loads(raw) if raw else None

    def _wake(self, log: str) -> None:
        # At most one wake-up in flight per log: a burst of output costs one message.
        with self._pending_lock:
            if log in self._pending:
                return
            self._pending.add(log)
        self.bridge().spawn(self._send_wake(log))

    async def _send_wake(self, log: str) -> None:
        from channels.layers import get_channel_layer

        with self._pending_lock:  # before sending: frames appended from now get a new one
            self._pending.discard(log)
        try:
            await get_channel_layer().group_send(group_name(log), {"type": "stream.wake"})
        except Exception:  # subscribers still poll; never let this kill the loop
            logger.warning("could not wake the subscribers of %s", log)

    async def subscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        from channels.layers import get_channel_layer

        await get_channel_layer().group_add(group_name(subscription.log), channel_name)

    async def unsubscribe(self, subscription: Subscription, channel_name: str | None) -> None:
        from channels.layers import get_channel_layer

        await get_channel_layer().group_discard(group_name(subscription.log), channel_name)

    def send_cancel(self, runner_identity: str, message: dict[str, Any]) -> bool:
        import redis
        from channels.layers import get_channel_layer

        message = {"type": "cancel", **message}
        channel = channel_name_for(runner_identity)
        try:
            self.bridge().call(get_channel_layer().send(channel, message))
        except (redis.ConnectionError, redis.TimeoutError):
            # A pooled connection Redis closed (a restart) fails on first use, and is then
            # dropped from the pool: once more, on a fresh one, rather than a 503.
            self.bridge().call(get_channel_layer().send(channel, message))
        return True

    def listen_for_cancels(self, identity: str, on_cancel: Callable[[dict], None]) -> None:
        self.bridge().spawn(self._listen(channel_name_for(identity), on_cancel))

    async def _listen(self, channel: str, on_cancel: Callable[[dict], None]) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        lost = False  # said once per outage
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    # The class only: a Redis error's text may carry the URL with its password.
                    logger.warning(
                        "the cancel listener lost the channel layer (%s); retrying every second",
                        type(exc).__name__,
                    )
                lost = True
                await asyncio.sleep(1)
                continue
            lost = False
            if message.get("type") == "cancel":
                on_cancel(message)

    def close(self) -> None:
        with self._bridge_lock:
            bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.loop.call_soon_threadsafe(bridge.loop.stop)
        self.redis.close()


def _build() -> LocalBackend | RedisBackend:
    namespace.cache_clear()  # the database may be another one now (tests)
    retention = settings.HOMELAB_STREAM_RETENTION_SECONDS
    if settings.REDIS_URL:
        return RedisBackend(settings.REDIS_URL, retention)
    return LocalBackend(retention)


_backend = ProcessWide("live frame log", _build, lambda backend: backend.close(), order=20)


def backend() -> LocalBackend | RedisBackend:
    """The process-wide frame log: Redis when REDIS_URL is set, else this process."""
    return _backend.get()
