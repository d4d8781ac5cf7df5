"""The execute endpoint's short path: a script's POST .../commands/execute, answered at the
ASGI level by the same pipeline with the same answer, without Django's request machinery.

Django answers every request through its request object, ten middlewares and DRF's
dispatch (negotiation, parsing, authentication, permission and throttle classes), each on
a thread created for that one request; for a warm `true` that is as long as the SSH
command itself (docs/performance.md, issue 20). A script calling execute with an API key
needs none of it: it sends JSON, has no session, cookie or browser origin. For exactly
such a request this ASGI middleware reads the body, authenticates the key as DRF does
(commands/api/authentication.py), and hands the request to services.request_execution,
the pipeline every transport shares, on a thread of a pool it keeps (so a SQLite
connection is reused). The answer is rendered by DRF's JSONRenderer and the API's own
exception handler (commands/api/handlers.py), with the headers Django's middleware would
add: the body, the status and the headers are the view's, byte for byte
(tests/test_fastpath.py compares the two paths request by request).

Everything else goes to Django unchanged: another method or path, no API key, a cookie, an
Origin header (CORS), a query string, a NUL, a Host not in ALLOWED_HOSTS, a body that is
not declared JSON, a request through a TLS proxy. HOMELAB_FAST_EXECUTE=0 turns it off.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import RequestDataTooBig
from django.http.request import split_domain_port, validate_host
from rest_framework import exceptions as drf_exceptions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer

from commands import services
from commands.api import clientip
from commands.api.authentication import KEYWORD, authenticate_key, raw_key
from commands.api.handlers import api_exception_handler, as_domain_error, error_body, quota_headers
from commands.api.serializers import ExecuteStartedSerializer
from commands.engine.runner import close_idle_connections
from commands.models import Execution
from commands.requests import Caller
from commands.results import result_of

logger = logging.getLogger(__name__)

PATH = re.compile(r"^/api/v1/servers/(?P<ref>[^/]+)/commands/execute/?$")
JSON_TYPE = re.compile(r"^application/json\s*(;\s*charset=utf-8\s*)?$", re.IGNORECASE)
# What Django's middleware and DRF add to the view's answer, for this request, in order.
VIEW_HEADERS = [
    (b"content-type", b"application/json"),
    (b"vary", b"Accept, origin"),  # DRF, then django-cors-headers
    (b"allow", b"POST, OPTIONS"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class FastExecute:
    """ASGI middleware in front of Django's application (homelab/asgi.py)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        found = PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        key = found and eligible_key(scope)
        if not key:
            await self.app(scope, receive, send)
            return
        body, too_large = await read_body(receive)
        loop = asyncio.get_running_loop()
        try:
            status, headers, content = await loop.run_in_executor(
                self.pool(), answer, scope, found["ref"], key, body, too_large
            )
        except asyncio.CancelledError:  # the server stops, or its client went away
            logger.info("a request ended without an answer: its client went away")
            raise
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def pool(self) -> ThreadPoolExecutor:
        # Its threads live on, each with its own database connection; as many as can wait
        # for a command at once, and a few for the quick refusals meanwhile.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=settings.HOMELAB_MAX_RUNNING + 8, thread_name_prefix="homelab-http"
                )
            return self._pool


def eligible_key(scope: dict) -> str | None:
    """The raw API key of a request the short path answers as Django would; None for any
    request that must go through Django."""
    if not settings.HOMELAB_FAST_EXECUTE or scope.get("method") != "POST":
        return None
    if scope.get("query_string") or "\x00" in scope["path"]:
        return None
    headers: dict[bytes, str] = {}
    for name, value in scope.get("headers", []):
        name = name.lower()
        if name in headers:  # a repeated header: Django's handling decides
            return None
        headers[name] = value.decode("latin-1")
    if b"cookie" in headers or b"origin" in headers or b"x-forwarded-proto" in headers:
        return None
    if not JSON_TYPE.match(headers.get(b"content-type", "")):
        return None
    domain, _ = split_domain_port(headers.get(b"host", ""))
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return raw_key(headers.get(b"authorization", ""), headers.get(b"x-api-key", ""))


async def read_body(receive: Any) -> tuple[bytes, bool]:
    """The request body, and whether it is over DATA_UPLOAD_MAX_MEMORY_SIZE (then only
    drained, as Django refuses it: 413 too_large)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        piece = message.get("body", b"")
        size += len(piece)
        if limit is None or size <= limit:
            chunks.append(piece)
        more = message.get("more_body", False)
    too_large = limit is not None and size > limit
    return (b"" if too_large else b"".join(chunks)), too_large


class _Request:
    """What the API's exception handler reads of a request (not_json, log_expected marks
    the error logged on the underlying request)."""

    method = "POST"
    content_type = "application/json"

    def __init__(self) -> None:
        self._request = SimpleNamespace()


def answer(scope: dict, ref: str, raw: str, body: bytes, too_large: bool) -> tuple:
    """(status, headers, body) of the execute view for this request, on a pool thread."""
    # As at the start of a Django request: a server connection kept (DATABASE_CONN_MAX_AGE)
    # is checked again before its first use (CONN_HEALTH_CHECKS), or closed when obsolete;
    # this thread's SQLite connection is kept.
    close_idle_connections()
    try:
        key = authenticate_key(raw)
        caller = Caller(key, key.owner or AnonymousUser(), clientip.from_scope(scope))
        execution = services.request_execution(
            caller=caller, server_ref=ref, body=lambda: parse(body, too_large)
        )
        extra = quota_headers(getattr(execution, "quota", None))
        if execution.status == Execution.Status.RUNNING:  # wait: false
            data = ExecuteStartedSerializer(execution).data
            status, extra = 202, {"Location": data["url"], **extra}
        else:
            data, status = result_of(execution), 200
    except Exception as exc:
        try:
            status, data, extra = refusal(exc, ref)
        except Exception:  # a bug: one line and a plain 500, never a traceback to the client
            logger.exception("the execute short path could not answer")
            status, data, extra = 500, error_body("Internal server error.", "server_error"), {}
    finally:
        close_idle_connections()  # as at the end of a request: past CONN_MAX_AGE, closed
    content = JSONRenderer().render(data, "application/json", {})
    headers = [*VIEW_HEADERS, *((k.lower().encode(), str(v).encode()) for k, v in extra.items())]
    return status, [*headers, (b"content-length", str(len(content)).encode())], content


def parse(body: bytes, too_large: bool) -> Any:
    """The body as DRF's JSONParser reads it, or the domain error (as views.read_body)."""
    if too_large:
        raise as_domain_error(RequestDataTooBig())
    if not body:
        return {}  # DRF: no body, no data
    try:
        return JSONParser().parse(io.BytesIO(body), "application/json", {"encoding": "utf-8"})
    except (drf_exceptions.APIException, RecursionError) as exc:
        raise as_domain_error(exc) from None


class _View:
    """What the exception handler reads of a view: the URL's server reference."""

    def __init__(self, ref: str) -> None:
        self.kwargs = {"pk": ref}


def refusal(exc: Exception, ref: str) -> tuple[int, Any, dict[str, str]]:
    """(status, body, headers) the API answers for exc, as DRF's dispatch would."""
    if isinstance(exc, drf_exceptions.AuthenticationFailed):
        exc.auth_header = KEYWORD  # as APIView.handle_exception sets it
    response = api_exception_handler(exc, {"view": _View(ref), "request": _Request()})
    if response is None:  # not reached: the handler answers every exception
        logger.error("no answer for %s", type(exc).__name__)
        return 500, error_body("Internal server error.", "server_error"), {}
    headers = {name: value for name, value in response.items()}
    headers.pop("Content-Type", None)
    return response.status_code, response.data, headers
