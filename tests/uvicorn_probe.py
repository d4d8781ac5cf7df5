"""The app as uvicorn serves it, plus one test-only path, GET /__nodelay, that answers
whether TCP_NODELAY is set on the server's end of the request's own connection (a
client cannot read that option of the other end). Served by tests/test_uvicorn.py only.

homelab.asgi is imported first, so its patch (homelab/asgi_patches.py) is in place; this
module then wraps uvicorn's protocols once more to read the option back after it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import socket

from homelab.asgi import application as homelab_app

_seen: dict[tuple, int] = {}  # the client's (host, port) -> TCP_NODELAY on our end


def _watch(protocol: type) -> None:
    patched = protocol.connection_made

    def connection_made(self, transport) -> None:
        patched(self, transport)  # homelab's patch, then uvicorn's own
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        if sock is not None and peer is not None:
            _seen[tuple(peer[:2])] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    protocol.connection_made = connection_made


for name, cls in (("h11_impl", "H11Protocol"), ("httptools_impl", "HttpToolsProtocol")):
    # httptools is optional (uvicorn[standard]); requirements.txt has plain uvicorn
    with contextlib.suppress(ImportError):
        _watch(getattr(importlib.import_module(f"uvicorn.protocols.http.{name}"), cls))


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/__nodelay":
        client = tuple(scope["client"][:2])
        body = json.dumps({"nodelay": _seen.get(client)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return
    await homelab_app(scope, receive, send)
