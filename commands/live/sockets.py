"""Who is on the other end of a WebSocket, and running a command from one.

A socket is authenticated by the API-key headers of its handshake (scripts) or by the
Django session (the admin, same origin only: a cookie sent by another site's page must not
count). `start_execution` is the one-connection client's execute: the same pipeline as
POST .../commands/execute with wait=false (services.request_execution); this module only
reads the frame and turns a refusal into an error frame and a close code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from commands import services
from commands.api import clientip
from commands.api.authentication import check_key, raw_key
from commands.exceptions import BodyTooLarge, HomelabError, InvalidRequest
from commands.requests import Caller
from commands.results import error_frame


def header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def same_origin(scope: dict) -> bool:
    """Whether a browser page of ours opened the socket (or no browser at all)."""
    origin = header(scope, b"origin")
    if not origin:
        return True  # not a browser: a cookie there was put there on purpose
    if origin in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        return True
    return urlsplit(origin).netloc == header(scope, b"host")


def key_from_headers(scope: dict) -> str | None:
    """The raw key of `Authorization: Api-Key <key>` or `X-API-Key: <key>`, as over HTTP."""
    return raw_key(header(scope, b"authorization"), header(scope, b"x-api-key"))


def identify(scope: dict) -> Caller | None:
    """The socket's caller by key or session (call from a thread); None: nobody valid."""
    address = clientip.from_scope(scope)
    raw = key_from_headers(scope)
    if raw is not None:
        key = check_key(raw)
        if key is None:
            return None
        return Caller(key, key.owner or AnonymousUser(), address)
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active and same_origin(scope):
        return Caller(None, user, address)
    return None


# --- execute over a socket ----------------------------------------------------------------
CLOSE_FOR_STATUS = {
    400: 4400,
    403: 4403,
    404: 4404,
    408: 4408,
    409: 4409,
    413: 4413,
    415: 4415,
    424: 4424,
    429: 4429,
    503: 4503,
}
MAX_MESSAGE = 64 * 1024  # a command is at most 1024 characters; JSON around it is small


@dataclass
class Refusal:
    """An error frame's text and the close code (4000 + the HTTP status it mirrors)."""

    close_code: int
    frame: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.frame)


def refusal(exc: HomelabError) -> Refusal:
    """The error frame and close code for a refusal, as the HTTP endpoint would answer."""
    extra = dict(exc.extra)
    execution_id = extra.pop("execution_id", None)
    if isinstance(exc, InvalidRequest) and exc.errors is not None:
        extra["errors"] = exc.errors
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        extra["retry_after"] = int(retry_after)
    frame = error_frame(exc.code, exc.detail, execution_id, **extra)
    status = int(exc.status_code)
    return Refusal(CLOSE_FOR_STATUS.get(status, 4500), json.loads(frame.text))


def start_execution(caller: Caller, server_ref: str, text: str | None) -> int | Refusal:
    """Start `{"command", "action_type"}` (the first text frame) on the server server_ref
    names: the execution id, or the refusal to send, audited like the HTTP endpoint's."""
    try:
        execution = services.request_execution(
            caller=caller, server_ref=server_ref, body=lambda: read_frame(text), wait=False
        )
    except HomelabError as exc:
        return refusal(exc)
    return execution.pk


def read_frame(text: str | None) -> Any:
    """The first frame's JSON; BodyTooLarge for one too large to be a command (a bad
    JSON text reads as an empty request: its fields are then reported missing)."""
    if text is not None and len(text) > MAX_MESSAGE:
        raise BodyTooLarge(f"A message is at most {MAX_MESSAGE} characters.")
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
