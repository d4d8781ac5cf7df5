"""Readiness: can this worker serve now? The database and, with REDIS_URL, Redis as the
cache and as the channel layer, each answering within a deadline.

A check that fails says which part and how (a short class name such as
`ConnectionError`, or `timed out`), never the error's text: a Redis or database error may
carry a URL with its password. The text goes to the server log, with any password in a
URL masked. A check that hangs (a frozen Redis, a silent database) keeps one thread of
its own busy, never a request's: while it is still stuck the next probe fails at once
with `still waiting for the last check` instead of stacking up threads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)

DEADLINE_SECONDS = 2.0
_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="homelab-readyz")
_in_flight: dict[str, Future] = {}
_PASSWORD_IN_URL = re.compile(r"(//[^/:@\s]*:)[^@\s]*@")


class StillWaiting(Exception):
    """The previous run of this check has not returned yet."""


def masked(text: str) -> str:
    """text with the password of any URL in it replaced by ***."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this thread's own connection: not left open between probes


def cache_round_trip() -> None:
    key, token = f"homelab:readyz:{secrets.token_hex(4)}", secrets.token_hex(8)
    cache.set(key, token, timeout=10)
    if cache.get(key) != token:
        raise LookupError("the value written was not read back")
    cache.delete(key)


async def channel_layer_round_trip() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("homelab-readyz")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readyz.ping":
        raise LookupError("the message sent was not received back")


def checks() -> dict[str, Callable[[], Any]]:
    """The checks for this configuration, by name."""
    named: dict[str, Callable[[], Any]] = {"database": database}
    if settings.REDIS_URL:
        named["cache"] = cache_round_trip
        named["channel_layer"] = channel_layer_round_trip
    return named


async def _in_thread(name: str, check: Callable[[], None]) -> None:
    running = _in_flight.get(name)
    if running is not None and not running.done():
        raise StillWaiting()
    future = _threads.submit(check)
    _in_flight[name] = future
    await asyncio.wrap_future(future)


async def run(name: str, check: Callable[[], Any]) -> dict[str, Any]:
    """{"status": "ok"|"fail", "ms": ...} for one check, given DEADLINE_SECONDS."""
    started = time.perf_counter()
    if asyncio.iscoroutinefunction(check):
        work: Awaitable[Any] = check()
    else:
        work = _in_thread(name, check)
    result: dict[str, Any] = {"status": "ok"}
    try:
        await asyncio.wait_for(work, DEADLINE_SECONDS)
    except TimeoutError:
        result = {"status": "fail", "error": f"timed out after {DEADLINE_SECONDS:g} s"}
    except StillWaiting:
        result = {"status": "fail", "error": "still waiting for the last check"}
    except Exception as exc:
        result = {"status": "fail", "error": type(exc).__name__}
        logger.warning("readiness check %s failed: %s", name, masked(str(exc)) or result["error"])
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def report() -> tuple[bool, dict[str, dict[str, Any]]]:
    """(all ok, each check's result), the checks run at once."""
    named = checks()
    results = await asyncio.gather(*(run(name, check) for name, check in named.items()))
    by_name = dict(zip(named, results, strict=True))
    return all(result["status"] == "ok" for result in by_name.values()), by_name
