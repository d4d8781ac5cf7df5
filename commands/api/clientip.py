"""The client address an audit row records, behind trusted reverse proxies or not.

X-Forwarded-For is believed only when the peer that sent the request is one of
HOMELAB_TRUSTED_PROXIES: anyone else could write anything there. Each proxy appends the
address it was talked to by, so the list is read from the right, skipping the proxies
we trust; the first address that is not one of them is the client. What a client put in
the header itself sits further left and is never reached past an untrusted hop.

The address is for the audit trail only; the quota is per API key (throttling.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse(text: str | None) -> Address | None:
    """An address from REMOTE_ADDR or one X-Forwarded-For entry; None if it is not one.

    Accepts `1.2.3.4:5678` and `[::1]:5678` (some proxies add the port); an IPv4 address
    mapped into IPv6 (dual-stack sockets) is returned as IPv4.
    """
    text = (text or "").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, trusted: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_ip(
    remote: str | None,
    forwarded_for: str | None,
    trusted: Iterable[Network] | None = None,
) -> str | None:
    """The client address: the peer (REMOTE_ADDR), or, when the peer is a trusted proxy,
    the right-most X-Forwarded-For address that is not itself a trusted proxy."""
    trusted = list(settings.HOMELAB_TRUSTED_PROXIES if trusted is None else trusted)
    peer = parse(remote)
    if peer is None:
        return None  # e.g. a Unix socket: no address to record
    if not forwarded_for or not is_trusted(peer, trusted):
        return str(peer)
    client = peer
    for entry in reversed(forwarded_for.split(",")):
        hop = parse(entry)
        if hop is None:
            break  # a trusted proxy wrote something that is not an address: stop at it
        client = hop
        if not is_trusted(hop, trusted):
            break
    return str(client)


def from_meta(meta: Mapping[str, Any]) -> str | None:
    """The client address of a Django request (request.META)."""
    return client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


def from_scope(scope: Mapping[str, Any]) -> str | None:
    """The client address of an ASGI connection (a WebSocket's scope)."""
    peer = (scope.get("client") or (None,))[0]
    # Several X-Forwarded-For header lines make one list, in order (RFC 9110 5.3).
    forwarded = ",".join(
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == b"x-forwarded-for"
    )
    return client_ip(peer, forwarded)
