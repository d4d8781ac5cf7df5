"""The execution quota: a per-API-key, atomic rate limit for command execution.

DRF's `SimpleRateThrottle` reads the request history, decides, then writes it back:
two concurrent requests can both read nine entries and both pass, and with a
local-memory cache each worker process counts on its own. This subclass keeps DRF's
rate parsing, scopes and `wait()` contract but makes the check-and-record one atomic
step: a Lua script on Redis (shared by every worker) or, with any other cache, a
process-wide lock. The window is a sliding log, so no burst can exceed the rate in
any window of the rate's length, not even across a window edge. The same step reads
what is left (`Usage`), which the API sends as X-RateLimit-* headers.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.utils.connection import ConnectionProxy
from redis.exceptions import RedisError
from rest_framework.exceptions import Throttled as DRFThrottled
from rest_framework.throttling import ScopedRateThrottle

from commands.exceptions import ServiceUnavailable, Throttled
from commands.models import ApiKey
from commands.requests import Caller

SCOPE = "command-execute"

# KEYS[1]: the log (a sorted set of request times). ARGV: window seconds, limit, member,
# count. Records `count` entries when they all fit, otherwise none. Answers {allowed (1 or
# 0), seconds until enough slots free (0 when allowed), entries counted now, seconds until
# the oldest of them leaves the window (0: none)}: the decision and what is left, read in
# the same atomic step. count 0 only reads. The server's clock (TIME) is used so workers
# with skewed clocks agree. Fractions travel as strings (Redis truncates Lua numbers).
SLIDING_LOG_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local count = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local allowed = 0
local wait = 0
if used + count <= limit then
  allowed = 1
  if count > 0 then
    for i = 1, count do
      redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. i)
    end
    redis.call('EXPIRE', KEYS[1], math.ceil(window))
    used = used + count
  end
else
  local last = used + count - limit - 1
  local frees = redis.call('ZRANGE', KEYS[1], last, last, 'WITHSCORES')
  if frees[2] == nil then
    wait = window
  else
    wait = tonumber(frees[2]) + window - now
  end
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] ~= nil then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, tostring(wait), used, tostring(reset)}
"""


@dataclass(frozen=True)
class Usage:
    """Where a caller's quota stands after a check: `limit` executions per `window`
    seconds, `remaining` of them left now, and `reset` seconds until one more frees (the
    oldest execution counted leaves the window; 0 when none is counted)."""

    limit: int
    window: int
    remaining: int
    reset: float


@dataclass(frozen=True)
class Counted:
    """One atomic check-and-record: whether it fit, the seconds to wait when it did not,
    how many executions the window holds now, and the seconds until the oldest leaves."""

    allowed: bool
    wait: float
    used: int
    reset: float


_local_lock = threading.Lock()
_shared_clients: dict[tuple[str, ...], Any] = {}


def shared_redis(backend: RedisCache) -> Any:
    """One Redis cache client (and so one connection pool) per Redis for the process.
    Django keeps a cache object per thread and ASGI runs each request on a new thread, so
    through `backend._cache` every request opened a new Redis connection: ~1.5 ms of a
    scale-out execute (docs/performance.md, issue 12). redis-py's pools are thread-safe."""
    servers = tuple(backend._servers)
    client = _shared_clients.get(servers)
    if client is None:
        client = _shared_clients.setdefault(servers, backend._cache)
    return client


class ExecuteRateThrottle(ScopedRateThrottle):
    """At most `rate` executions per window per API key (per user for session logins)."""

    scope_attr = "throttle_scope"

    def get_cache_key(self, request, view) -> str | None:
        # Keyed by credential, never by client address or X-Forwarded-For: one key
        # gets one quota wherever it is used from (Caller.ident: the key's prefix, unique
        # per key; the pk would put the key's hash into Redis).
        key = request.auth if isinstance(request.auth, ApiKey) else None
        ident = Caller(api_key=key, user=request.user).ident
        if ident is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view, count: int = 1) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        self.usage: Usage | None = None
        if not self.scope:
            return True
        self.rate = self.rate_of(request.auth)
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        counted = self.record(self.key, count)
        self.retry_after = counted.wait
        self.usage = Usage(
            limit=self.num_requests,
            window=self.duration,
            remaining=max(self.num_requests - counted.used, 0),
            reset=counted.reset,
        )
        return counted.allowed

    def rate_of(self, key: Any) -> str:
        """The key's own rate (ApiKey.rate, e.g. 100/min), else the scope's setting."""
        own = getattr(key, "rate", "") if isinstance(key, ApiKey) else ""
        return own or self.get_rate()

    def record(self, key: str, count: int = 1) -> Counted:
        """Atomically count `count` executions if they all fit (0: only look)."""
        backend = self.backend()
        if isinstance(backend, RedisCache):
            return self.record_in_redis(backend, key, count)
        return self.record_locally(key, count)

    def backend(self) -> BaseCache:
        # DRF's default `cache` is django.core.cache.cache, a proxy: look through it to
        # the configured backend, or a Redis deployment would fall back to the local lock.
        if isinstance(self.cache, ConnectionProxy):
            return caches[DEFAULT_CACHE_ALIAS]
        return self.cache

    def record_in_redis(self, backend: RedisCache, key: str, count: int) -> Counted:
        full_key = backend.make_and_validate_key(key)
        member = uuid.uuid4().hex
        try:
            client = shared_redis(backend).get_client(full_key, write=True)
            allowed, wait, used, reset = client.eval(
                SLIDING_LOG_SCRIPT, 1, full_key, self.duration, self.num_requests, member, count
            )
        except RedisError:
            # Fail closed: without the shared count no quota can be promised.
            raise ServiceUnavailable(
                "The rate-limit store (Redis, REDIS_URL) is not answering, so no command "
                "can be run now; check that Redis is up."
            ) from None
        return Counted(bool(allowed), float(wait), int(used), float(reset))

    def record_locally(self, key: str, count: int) -> Counted:
        # The local-memory cache lives in this process, so a process-wide lock makes
        # read-decide-write atomic (the embedded, single-process deployment).
        with _local_lock:
            now = self.timer()
            history = [t for t in self.cache.get(key, []) if t > now - self.duration]
            over = len(history) + count - self.num_requests
            allowed, wait = over <= 0, 0.0
            if not allowed:
                # Enough slots free once the `over` oldest entries leave the window.
                frees = history[over - 1] if over <= len(history) else now
                wait = frees + self.duration - now
            elif count:
                history.extend([now] * count)
                self.cache.set(key, history, self.duration)
            reset = history[0] + self.duration - now if history else 0.0
            return Counted(allowed, wait, len(history), reset)

    def wait(self) -> float:
        """Whole seconds until a slot frees; at least 1 so Retry-After is always sent."""
        return max(1, math.ceil(self.retry_after))


def rate_of(caller: Caller) -> str:
    """The caller's rate as written: its key's own (ApiKey.rate), or HOMELAB_EXECUTE_RATE."""
    throttle = ExecuteRateThrottle()
    throttle.scope = SCOPE
    return throttle.rate_of(caller.api_key)


def limit_of(caller: Caller) -> tuple[int, int]:
    """(executions, per seconds) the caller may make: its key's own rate, or the setting."""
    return ExecuteRateThrottle().parse_rate(rate_of(caller))


def take(caller: Caller, count: int = 1) -> Usage | None:
    """Count `count` executions against caller's quota, all or none, and say what is left:
    Throttled (429, with the whole seconds to wait and its `quota`) when they do not all
    fit. An anonymous caller (the CLI) has no quota: None."""
    throttle = ExecuteRateThrottle()
    request = _QuotaRequest(auth=caller.api_key, user=caller.user)
    if not throttle.allow_request(request, _QUOTA_VIEW, count):
        wait = throttle.wait()
        # DRF's own sentence, as every other throttled answer of the API says it.
        refused = Throttled(str(DRFThrottled(wait).detail), retry_after=wait)
        refused.quota = throttle.usage
        raise refused
    return throttle.usage


def peek(caller: Caller) -> Usage | None:
    """Where caller's quota stands, counting nothing (None for an anonymous caller)."""
    throttle = ExecuteRateThrottle()
    throttle.allow_request(_QuotaRequest(auth=caller.api_key, user=caller.user), _QUOTA_VIEW, 0)
    return throttle.usage


@dataclass(frozen=True)
class _QuotaRequest:
    auth: Any
    user: Any


@dataclass(frozen=True)
class _QuotaView:
    throttle_scope: str = SCOPE


_QUOTA_VIEW = _QuotaView()


def window_seconds(scope: str = SCOPE) -> int:
    """The length of scope's rate window in seconds (60 for "10/min")."""
    throttle = ExecuteRateThrottle()
    _, duration = throttle.parse_rate(throttle.THROTTLE_RATES.get(scope))
    return duration or 60
