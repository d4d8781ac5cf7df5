"""Timers around each stage of POST .../execute, for bench/profile_http.py only.

Loaded into a bench daphne through bench/profile_settings.py (a timing middleware first in
the list) and bench/profile_asgi.py (the ASGI app wrapped, the stages patched). The bench
sends one request at a time, so one process-wide accumulator per request is enough; each
request's stage times (ms) are appended as a JSON line to $HOMELAB_PROFILE_LOG.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import defaultdict

_lock = threading.Lock()
_spans: dict[str, float] = defaultdict(float)
_counts: dict[str, int] = defaultdict(int)


def add(name: str, seconds: float) -> None:
    with _lock:
        _spans[name] += seconds * 1000
        _counts[name] += 1


def timing(name: str):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(name, time.perf_counter() - started)

        return wrapper

    return decorate


def patch(owner, attribute: str, name: str) -> None:
    if not hasattr(owner, attribute):  # the code moved: say so rather than fail the bench
        print(f"profile_hooks: no {owner.__name__}.{attribute} to time", file=sys.stderr)
        return
    setattr(owner, attribute, timing(name)(getattr(owner, attribute)))


class TimingMiddleware:
    """First in MIDDLEWARE: the whole of Django's middleware stack and the view."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        try:
            return self.get_response(request)
        finally:
            add("middleware + view", time.perf_counter() - started)


class TimingASGI:
    """Wraps the ASGI app: from the call to the last body chunk handed to the server."""

    def __init__(self, app) -> None:
        self.app = app
        self.log = os.environ["HOMELAB_PROFILE_LOG"]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with _lock:
            _spans.clear()
            _counts.clear()
        started = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # Logged here: Django's handler returns only a while after the response
                # (its disconnect listener), when the client may have sent the next one.
                add("asgi app", time.perf_counter() - started)
                with _lock:
                    record = {**_spans, **{f"n {k}": v for k, v in _counts.items()}}
                with open(self.log, "a") as out:
                    out.write(json.dumps(record) + "\n")
            await send(message)

        await self.app(scope, receive, timed_send)


def install() -> None:
    """Patch the stages of the execute path (call once, after Django is set up)."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from rest_framework.renderers import JSONRenderer
    from rest_framework.views import APIView

    from commands import quota as throttling
    from commands import rules, scopes, services
    from commands.api import authentication, views
    from commands.models import Execution
    from commands.ssh.pool import SSHPooledExecutor

    patch(APIView, "initial", "DRF initial (auth, permission)")
    patch(authentication.ApiKeyAuthentication, "authenticate", "auth: API key lookup")
    patch(throttling.ExecuteRateThrottle, "allow_request", "quota (throttle)")
    patch(services, "find_server", "server lookup")
    patch(views.ServerViewSet, "execute", "execute view")
    patch(scopes, "check_execute", "key scope check")
    patch(rules, "resolve", "whitelist resolve")
    patch(Execution, "save", "audit row save (before SSH)")
    patch(services, "close", "audit row finish + result frame")
    patch(services, "execute_command", "execute_command")
    patch(SSHPooledExecutor, "execute", "SSH (executor.execute)")
    patch(JSONRenderer, "render", "JSON render")
    patch(CursorWrapper, "execute", "SQL statements")
    patch(BaseDatabaseWrapper, "connect", "DB connect")
    serializer = views.ExecuteResultSerializer

    class TimedResult(serializer):
        @property
        def data(self):
            started = time.perf_counter()
            try:
                return super().data
            finally:
                add("result serializer", time.perf_counter() - started)

    views.ExecuteResultSerializer = TimedResult
