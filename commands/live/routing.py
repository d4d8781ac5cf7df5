"""WebSocket routes (the HTTP ones are in urls.py)."""

from django.urls import re_path

from commands.live import consumers

DENIAL = "websocket.http.response"  # the ASGI extension for an HTTP answer to a handshake


async def no_such_endpoint(scope: dict, receive, send) -> None:
    """Any other WebSocket path: a plain HTTP 404 where the server has the denial-response
    extension (daphne, through homelab/asgi_patches.py), else a refused handshake (403).
    Channels' router would raise instead: a 500 and a traceback in the log."""
    await receive()  # websocket.connect
    if DENIAL in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": f"{DENIAL}.start", "status": 404, "headers": headers})
        await send({"type": f"{DENIAL}.body", "body": b"No such WebSocket endpoint.\n"})
    else:
        await send({"type": "websocket.close"})


websocket_urlpatterns = [
    re_path(
        r"^ws/v1/executions/(?P<execution_id>[^/]+)/?$",
        consumers.ExecutionStreamConsumer.as_asgi(),
    ),
    re_path(
        r"^ws/v1/batches/(?P<batch_id>[^/]+)/?$",
        consumers.BatchStreamConsumer.as_asgi(),
    ),
    re_path(
        r"^ws/v1/servers/(?P<server>[^/]+)/commands/execute/?$",
        consumers.ExecuteConsumer.as_asgi(),
    ),
    re_path(r"", no_such_endpoint),  # last: whatever the routes above do not take
]
