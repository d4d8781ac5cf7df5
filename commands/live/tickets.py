"""Single-use stream tickets: a browser's WebSocket cannot send headers, so it shows one.

A ticket is random, valid TICKET_SECONDS and redeemable once; only its hash is stored, in
the cache every worker shares.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.core.cache import cache

from commands.requests import Caller

TICKET_SECONDS = 60


def _ticket_key(ticket: str) -> str:
    return "stream-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(stream: str, caller: Caller) -> str:
    """A ticket for caller to follow `stream` (a frame log's name, e.g. execution.42)."""
    ticket = secrets.token_urlsafe(32)
    holder = {
        "stream": stream,
        "api_key_id": caller.api_key.pk if caller.api_key else None,
        "user_id": caller.account.pk if caller.account is not None else None,
    }
    cache.set(_ticket_key(ticket), holder, TICKET_SECONDS)
    return ticket


def redeem_ticket(ticket: str) -> dict[str, Any] | None:
    """The ticket's holder, once: the first redeemer deletes it, any later one gets None."""
    key = _ticket_key(ticket)
    holder = cache.get(key)
    if holder is None or not cache.delete(key):
        return None
    return holder
